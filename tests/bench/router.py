"""`make bench`: the router against a bare aiokafka consume -> produce pipe, in one run, one broker.

Throughput, for each record size of tests/bench/messages.py: the same pre-encoded messages go
through (a) a bare pipe that forwards each record's bytes and (b) the router as its own process;
figures are reported as ratios to the pipe, with the router process's CPU time (all its threads)
per routed message. Latency: publish -> committed in the inbox (read_committed) at a fixed offered
load, with the router's default settings. Results go to a table and to `.run/bench/router.json`.
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from liaison.local.broker import BrokerConfig, LocalBroker, free_port
from tests.bench.messages import SIZES
from tests.bench.report import report
from tests.bus_harness import Bus, running_bus
from tests.services_harness import ServiceProcess, start_router_process

MESSAGES = int(os.environ.get("BENCH_MESSAGES", "20000"))
RATE = int(os.environ.get("BENCH_RATE", "1000"))
LATENCY_SECONDS = float(os.environ.get("BENCH_LATENCY_SECONDS", "10"))
SENDERS = ("FR-PN", "NL-KLPD", "ES-CNP", "PL-KGP")
RECIPIENT = "DE-BKA"


def _messages(bus: Bus, count: int, tag: str, size: str = "small") -> list[tuple[str, bytes, bytes]]:
    build, out = SIZES[size], []
    for i in range(count):
        sender = SENDERS[i % len(SENDERS)]
        msg = build(sender, RECIPIENT, f"{tag}-{i}")
        out.append((bus.topics.outbox("Alert", sender), f"{tag}-{i}".encode(),
                    bus.codec.encode("Alert", msg)))
    return out


async def _publish(bootstrap: str, messages: list[tuple[str, bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, enable_idempotence=True)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for topic, key, value in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def bare_pipe(bus: Bus, count: int) -> float:
    """Messages per second of consume -> produce of the same bytes, offsets committed per batch."""
    bootstrap = bus.settings.bootstrap_servers
    sink = bus.topics.inbox("Alert", "EU-EUROPOL")
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=f"{bus.settings.topic_prefix}pipe",
        enable_auto_commit=False, auto_offset_reset="earliest", isolation_level="read_committed",
        max_poll_records=1000)
    consumer.subscribe(pattern=bus.topics.outbox_pattern)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, enable_idempotence=True,
                                max_batch_size=256 * 1024)
    await consumer.start()
    await producer.start()
    try:
        done, started = 0, None
        while done < count:
            batches = await consumer.getmany(timeout_ms=100, max_records=1000)
            if not batches:
                continue
            started = started or time.perf_counter()
            futures = []
            for records in batches.values():
                futures += [await producer.send(sink, r.value, key=r.key) for r in records]
                done += len(records)
            await asyncio.gather(*futures)
            await consumer.commit()
        assert started is not None
        return count / (time.perf_counter() - started)
    finally:
        await producer.stop()
        await consumer.stop()


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:  # loopback only
        text = resp.read().decode()
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (librdkafka's too), from /proc."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state is field 3
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def _rss_peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def router_throughput(bus: Bus, workdir: Path, count: int, *, routers: int = 1,
                            live: list[tuple[str, bytes, bytes]] | None = None
                            ) -> tuple[float, float, float]:
    """Messages per second through `routers` router processes, the first one's peak RSS, and the
    routers' CPU µs per routed message (from the clock's start to the last record counted).

    Without `live`, the messages were published before the routers start. With it, every router
    first owns its share of the partitions, then `live` is published, so that no instance can
    drain the backlog before the others have joined.
    """
    ports = [free_port() for _ in range(routers)]
    procs: list[ServiceProcess] = []
    try:
        for i, port in enumerate(ports):
            procs.append(start_router_process(bus, workdir, f"bench-router-{routers}-{i}-{id(live)}",
                                              LIAISON_METRICS_PORT=str(port)))
        if live is not None:
            total = len(bus.directory.agencies) * 3 * 2
            await _wait_until(lambda: all(_metric(p, "liaison_router_assigned_partitions") > 0
                                          for p in ports)
                              and sum(_metric(p, "liaison_router_assigned_partitions") for p in ports)
                              == total, 120)
            started = time.perf_counter()
            cpu = sum(cpu_seconds(proc.pid) for proc in procs)
            await _publish(bus.settings.bootstrap_servers, live)
        else:  # the clock starts when the router owns partitions: from then on it only routes
            started = await _wait_until(lambda: _metric(ports[0], "liaison_router_assigned_partitions")
                                        > 0, 120)
            cpu = sum(cpu_seconds(proc.pid) for proc in procs)
        await _wait_until(lambda: sum(_metric(p, "liaison_router_records_total")
                                      for p in ports) >= count, 600)
        rate = count / (time.perf_counter() - started)
        cpu = sum(cpu_seconds(proc.pid) for proc in procs) - cpu
        return rate, _rss_peak_mb(procs[0].pid), cpu / count * 1e6
    finally:
        for proc in procs:
            proc.stop()


async def _wait_until(condition: Callable[[], bool], timeout_s: float) -> float:
    """perf_counter() at the first moment `condition` held (polled in a thread every 20 ms)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if await asyncio.to_thread(condition):
                return time.perf_counter()
        except OSError:
            pass  # the metrics endpoint is not up yet
        await asyncio.sleep(0.02)
    raise TimeoutError(f"condition not met within {timeout_s} s")


async def latency(bus: Bus, workdir: Path, **env: str) -> tuple[float, float, int]:
    """p50 and p99 ms from publish to committed in the inbox, at RATE msg/s; `env` overrides the
    router's settings (`LIAISON_BATCH_TIMEOUT_MS=...`), to try other values."""
    count = int(RATE * LATENCY_SECONDS)
    messages = _messages(bus, count, "lat")
    inbox = bus.topics.inbox("Alert", RECIPIENT)
    consumer = AIOKafkaConsumer(inbox, bootstrap_servers=bus.settings.bootstrap_servers,
                                group_id=None, isolation_level="read_committed", fetch_max_wait_ms=10,
                                auto_offset_reset="latest", enable_auto_commit=False)
    await consumer.start()
    await consumer.seek_to_end()
    port = free_port()
    router = start_router_process(bus, workdir, f"bench-router-latency-{len(env)}-{id(env)}",
                                  LIAISON_METRICS_PORT=str(port), **env)
    producer = AIOKafkaProducer(bootstrap_servers=bus.settings.bootstrap_servers, linger_ms=0,
                                enable_idempotence=True)
    await producer.start()
    try:
        await _wait_until(lambda: _metric(port, "liaison_router_assigned_partitions") > 0, 120)
        await asyncio.sleep(1.0)  # let the group settle before timing
        return await paced(producer, consumer, messages, RATE)
    finally:
        await producer.stop()
        await consumer.stop()
        router.stop()


async def paced(producer: AIOKafkaProducer, consumer: AIOKafkaConsumer,
                messages: list[tuple[str, bytes, bytes]], rate: int) -> tuple[float, float, int]:
    """Publish `messages` at `rate` per second and read them back: p50 and p99 ms, and how many.

    `consumer` reads the inbox from its end, read_committed; keys tell the messages apart."""
    sent: dict[bytes, float] = {}
    latencies: list[float] = []
    receiver = asyncio.create_task(_receive(consumer, sent, latencies, len(messages)))
    start = time.perf_counter()
    for i, (topic, key, value) in enumerate(messages):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent[key] = time.perf_counter()
        await producer.send(topic, value, key=key)
    await asyncio.wait_for(receiver, 60)
    latencies.sort()
    return (statistics.median(latencies), latencies[int(len(latencies) * 0.99) - 1], len(latencies))


async def _receive(consumer: AIOKafkaConsumer, sent: dict[bytes, float], out: list[float],
                   count: int) -> None:
    while len(out) < count:
        batches = await consumer.getmany(timeout_ms=100)
        now = time.perf_counter()
        for records in batches.values():
            out += [(now - sent[r.key]) * 1000 for r in records if r.key in sent]


async def backlog(bootstrap: str, workdir: Path, size: str) -> dict[str, Any]:
    """Pipe and router on the same pre-published backlog of one record size; keys name the size
    (none for the small records, which earlier runs reported alone)."""
    async with running_bus(bootstrap, router=False, partitions=2) as bus:
        messages = _messages(bus, MESSAGES, f"thr-{size}", size)
        await _publish(bootstrap, messages)
        pipe = await bare_pipe(bus, MESSAGES)
        one, rss, cpu = await router_throughput(bus, workdir, MESSAGES)
    key = "" if size == "small" else f"{size}_"
    return {f"{key}record_bytes": round(statistics.mean(len(v) for _, _, v in messages)),
            f"{key}pipe_msgs_per_s": round(pipe), f"{key}router_msgs_per_s": round(one),
            f"{key}ratio_vs_pipe": round(one / pipe, 3), f"{key}router_cpu_us_per_msg": round(cpu, 1),
            f"{key}peak_rss_mb": round(rss, 1)}


async def measure(bootstrap: str, workdir: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"messages": MESSAGES}
    for size in SIZES:
        result.update(await backlog(bootstrap, workdir, size))
    async with running_bus(bootstrap, router=False, partitions=2) as bus:
        one_live, _, _ = await router_throughput(bus, workdir, MESSAGES,
                                                 live=_messages(bus, MESSAGES, "one"))
    async with running_bus(bootstrap, router=False, partitions=2) as bus:
        two, _, _ = await router_throughput(bus, workdir, MESSAGES, routers=2,
                                            live=_messages(bus, MESSAGES, "two"))
    async with running_bus(bootstrap, router=False) as bus:
        p50, p99, received = await latency(bus, workdir)
    return {
        **result, "one_router_live_msgs_per_s": round(one_live),
        "two_routers_live_msgs_per_s": round(two), "scale_out_ratio": round(two / one_live, 3),
        "offered_rate_msgs_per_s": RATE,
        "latency_samples": received, "p50_ms": round(p50, 2), "p99_ms": round(p99, 2),
    }


def on_own_broker(measure: Callable[[str, Path], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """`measure(bootstrap, workdir)` with a broker of its own, so that nothing else on the machine
    shares it during the run; a failure ends the process with the logs' last lines."""
    with tempfile.TemporaryDirectory(prefix="liaison-bench-") as tmp:
        workdir = Path(tmp)
        broker = LocalBroker(BrokerConfig(home=workdir / "kafka", port=free_port(),
                                          controller_port=free_port(), heap_mb=1024))
        broker.start(timeout_s=90)
        try:
            return asyncio.run(measure(broker.config.bootstrap, workdir))
        except (TimeoutError, OSError, RuntimeError) as exc:
            print(f"bench failed: {exc}", file=sys.stderr)
            for log in sorted([*workdir.glob("*.log"), broker.config.log_file]):
                print(f"--- {log.name}", *log.read_text(errors="replace").splitlines()[-15:],
                      sep="\n", file=sys.stderr)
            raise SystemExit(1) from None
        finally:
            broker.stop()


def main() -> None:
    report("router", on_own_broker(measure))


if __name__ == "__main__":
    main()
