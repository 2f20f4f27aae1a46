"""`make bench`, third part: the whole local stack plain and secured, the same backlog routed by each.

Each stack (broker, registry, router, deadlines) runs in a temporary folder on free ports. FR-PN
publishes a backlog of alerts to DE-BKA with its own credential while the router is running; the time
until DE-BKA has read every one (read_committed, its own credential) gives messages per second.
The figure that matters is the ratio secured / plain. Then FR-PN publishes at a fixed rate and DE-BKA
reads: p50 and p99 ms from publish to read, with the router's default settings. Results go to
`.run/bench/secured_router.json`.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from liaison.codec import Codec
from liaison.contract import ready_codec
from liaison.local.broker import BrokerConfig, free_port
from liaison.local.stack import SERVICES, LocalStack
from liaison.registry_client import RegistryClient
from tests.bench.messages import small
from tests.bench.report import report
from tests.bench.router import paced

MESSAGES = int(os.environ.get("BENCH_SECURED_ROUTER_MESSAGES", "5000"))
RATE = int(os.environ.get("BENCH_RATE", "1000"))
LATENCY_SECONDS = float(os.environ.get("BENCH_LATENCY_SECONDS", "10"))
TIMEOUT_S = 300.0


async def _measure(stack: LocalStack) -> tuple[float, tuple[float, float, int]]:
    async with RegistryClient.from_settings(stack.admin_settings()) as client:
        codec = await ready_codec(client)
    return await _route(stack, codec), await _latency(stack, codec)


async def _latency(stack: LocalStack, codec: Codec) -> tuple[float, float, int]:
    """p50, p99 ms and samples, FR-PN's outbox to DE-BKA's inbox at RATE msg/s."""
    fr, de = stack.agency_settings("FR-PN"), stack.agency_settings("DE-BKA")
    outbox = fr.topics.outbox("Alert", "FR-PN")
    messages = [(outbox, f"L-{i}".encode(), codec.encode("Alert", small("FR-PN", "DE-BKA", f"L-{i}")))
                for i in range(int(RATE * LATENCY_SECONDS))]
    consumer = AIOKafkaConsumer(de.topics.inbox("Alert", "DE-BKA"), **de.kafka_kwargs(), group_id=None,
                                isolation_level="read_committed", auto_offset_reset="latest",
                                fetch_max_wait_ms=10)
    await consumer.start()
    await consumer.seek_to_end()
    producer = AIOKafkaProducer(**fr.kafka_kwargs(), enable_idempotence=True, linger_ms=0)
    await producer.start()
    try:
        return await paced(producer, consumer, messages, RATE)
    finally:
        await producer.stop()
        await consumer.stop()


async def _route(stack: LocalStack, codec: Codec) -> float:
    fr, de = stack.agency_settings("FR-PN"), stack.agency_settings("DE-BKA")
    topics = fr.topics
    values = [codec.encode("Alert", small("FR-PN", "DE-BKA", f"B-{i}")) for i in range(MESSAGES)]
    consumer = AIOKafkaConsumer(topics.inbox("Alert", "DE-BKA"), **de.kafka_kwargs(), group_id=None,
                                isolation_level="read_committed", auto_offset_reset="latest")
    await consumer.start()
    await consumer.seek_to_end()
    producer = AIOKafkaProducer(**fr.kafka_kwargs(), enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        started = time.perf_counter()
        futures = [await producer.send(topics.outbox("Alert", "FR-PN"), v, key=str(i).encode())
                   for i, v in enumerate(values)]
        await asyncio.gather(*futures)
        seen, deadline = 0, time.monotonic() + TIMEOUT_S
        while seen < MESSAGES:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {seen} of {MESSAGES} routed within {TIMEOUT_S:.0f} s")
            for records in (await consumer.getmany(timeout_ms=500)).values():
                seen += len(records)
        return MESSAGES / (time.perf_counter() - started)
    finally:
        await producer.stop()
        await consumer.stop()


def _run(home: Path, *, secure: bool) -> tuple[float, tuple[float, float, int]]:
    stack = LocalStack(BrokerConfig(home=home / "kafka", port=free_port(), controller_port=free_port(),
                                    heap_mb=1024),
                       run=home, secure=secure, registry_port=free_port(),
                       metrics_ports={spec.name: free_port() for spec in SERVICES})
    try:
        stack.up(timeout_s=90)
        return asyncio.run(_measure(stack))
    finally:
        stack.down()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="liaison-bench-stack-") as tmp:
        plain, plain_latency = _run(Path(tmp) / "plain", secure=False)
        secured, secured_latency = _run(Path(tmp) / "secured", secure=True)
    result: dict[str, Any] = {
        "messages": MESSAGES,
        "plain_routed_msgs_per_s": round(plain),
        "secured_routed_msgs_per_s": round(secured),
        "routed_ratio_secured_vs_plain": round(secured / plain, 3),
        "offered_rate_msgs_per_s": RATE,
    }
    for name, (p50, p99, samples) in (("plain", plain_latency), ("secured", secured_latency)):
        result.update({f"{name}_p50_ms": round(p50, 2), f"{name}_p99_ms": round(p99, 2),
                       f"{name}_latency_samples": samples})
    report("secured_router", result)


if __name__ == "__main__":
    main()
