"""`make soak`: steady traffic from many agencies on a three-node cluster while faults strike at random.

For `SOAK_MINUTES` (default 10), agencies send alerts to each other at `SOAK_RATE` messages per
second in all, and every `SOAK_FAULT_EVERY_S` seconds or so (at random, ±50 %) one of these happens:
a broker is killed (SIGKILL) and started again after a while, the router is killed and started
again, or the registry is restarted. Then the ledger reads every inbox, receipt and audit record
back. `.run/bench/soak.json` gets the messages sent, lost and duplicated, the p99 latency, the
longest stall and each fault with its time. Target: 0 lost, 0 duplicated. Not part of `make test`.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from liaison.local.stack import SERVICES, LocalStack, ServiceSpec
from tests.bench.report import report
from tests.cluster_harness import Traffic, Verdict, cluster_stack, in_sync, kill, read_ledger, stack_codec
from tests.kafka_helpers import eventually

MINUTES = float(os.environ.get("SOAK_MINUTES", "10"))
RATE = float(os.environ.get("SOAK_RATE", "300"))
FAULT_EVERY_S = float(os.environ.get("SOAK_FAULT_EVERY_S", "60"))
SEED = int(os.environ.get("SOAK_SEED", str(int(time.time()))))


def _service(name: str) -> ServiceSpec:
    return next(spec for spec in SERVICES if spec.name == name)


async def _restart_service(stack: LocalStack, name: str, *, hard: bool) -> None:
    """SIGKILL (`hard`) or SIGTERM one service, then start what is not running, as `make up` does."""
    pid = stack.service_pid(_service(name))
    assert pid is not None, f"{name} is not running"
    os.kill(pid, signal.SIGKILL if hard else signal.SIGTERM)

    async def current() -> int | None:
        return stack.service_pid(_service(name))

    await eventually(current, lambda now: now != pid, timeout_s=30)
    await asyncio.to_thread(stack.up, timeout_s=120)


async def _broker_fault(stack: LocalStack, rng: random.Random) -> str:
    node = rng.choice(stack.cluster.brokers)
    kill(node)
    down_s = rng.uniform(5, 30)
    await asyncio.sleep(down_s)
    await asyncio.to_thread(stack.cluster.start, timeout_s=120)
    await in_sync(stack, timeout_s=300)
    return f"broker {node.config.node_id} killed, down {down_s:.0f} s"


async def _fault(stack: LocalStack, rng: random.Random) -> str:
    kind = rng.choice(["broker", "router", "registry"])
    if kind == "broker":
        return await _broker_fault(stack, rng)
    await _restart_service(stack, kind, hard=kind == "router")
    return "router killed and started again" if kind == "router" else "registry restarted"


async def _soak(stack: LocalStack) -> dict[str, Any]:
    rng = random.Random(SEED)
    codec = await stack_codec(stack)
    traffic = Traffic(stack, codec, rate=RATE)
    faults: list[dict[str, Any]] = []
    started = time.monotonic()
    traffic.start()
    try:
        while (left := MINUTES * 60 - (time.monotonic() - started)) > 0:
            await asyncio.sleep(min(left, rng.uniform(FAULT_EVERY_S / 2, FAULT_EVERY_S * 1.5)))
            if MINUTES * 60 - (time.monotonic() - started) < 10:
                break
            at = round(time.monotonic() - started, 1)
            faults.append({"at_s": at, "fault": await _fault(stack, rng)})
            print(f"{at:7.1f} s  {faults[-1]['fault']}", flush=True)
    finally:
        await traffic.stop()
    verdict = Verdict.of(traffic, await read_ledger(stack, codec, traffic.sent, timeout_s=600))
    return {"minutes": MINUTES, "offered_rate_msgs_per_s": RATE, "seed": SEED, **asdict(verdict),
            "faults": faults}


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="liaison-soak-") as home:
        stack = cluster_stack(Path(home))
        try:
            stack.up(timeout_s=180)
            result = asyncio.run(_soak(stack))
        finally:
            stack.down()
    report("soak", result)
    if result["lost"] or result["duplicated"]:
        raise SystemExit(f"soak: {result['lost']} lost and {result['duplicated']} duplicated")


if __name__ == "__main__":
    main()
