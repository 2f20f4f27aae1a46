"""`make bench`, second part: what SCRAM over TLS costs, as ratios against plain text in the same run.

One broker plain, one secured, started one after the other on this machine; the same records are
produced (idempotent, acks=all) and consumed (read_committed) through each, and the time of a new
authenticated connection is measured. Results go to a table and to `.run/bench/security.json`.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaClient, AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from liaison.core.settings import KafkaSettings
from liaison.local.broker import BrokerConfig, BrokerSecurity, LocalBroker, free_port
from liaison.security.credentials import new_password
from liaison.security.tls import DevTls
from tests.bench.report import report

MESSAGES = int(os.environ.get("BENCH_SECURITY_MESSAGES", "50000"))
SIZE = 1024
CONNECTS = 20
TOPIC = "bench.security"


async def _produce(settings: KafkaSettings, payload: bytes) -> float:
    producer = AIOKafkaProducer(**settings.kafka_kwargs(), linger_ms=5, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        started = time.perf_counter()
        futures = [await producer.send(TOPIC, payload, key=str(i).encode()) for i in range(MESSAGES)]
        await asyncio.gather(*futures)
        return MESSAGES / (time.perf_counter() - started)
    finally:
        await producer.stop()


async def _consume(settings: KafkaSettings) -> float:
    consumer = AIOKafkaConsumer(TOPIC, **settings.kafka_kwargs(), group_id=None, auto_offset_reset="earliest",
                                isolation_level="read_committed", enable_auto_commit=False)
    await consumer.start()
    try:
        seen, started = 0, time.perf_counter()
        while seen < MESSAGES:
            for records in (await consumer.getmany(timeout_ms=500, max_records=5000)).values():
                seen += len(records)
        return MESSAGES / (time.perf_counter() - started)
    finally:
        await consumer.stop()


async def _connect_ms(settings: KafkaSettings) -> float:
    """Median time of a new client's bootstrap: TCP, plus TLS and the SCRAM exchange when secured."""
    times = []
    for _ in range(CONNECTS):
        client = AIOKafkaClient(**settings.kafka_kwargs())
        started = time.perf_counter()
        await client.bootstrap()
        times.append((time.perf_counter() - started) * 1000)
        await client.close()
    return statistics.median(times)


async def _measure(settings: KafkaSettings) -> dict[str, float]:
    admin = AIOKafkaAdminClient(**settings.kafka_kwargs())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(TOPIC, num_partitions=3, replication_factor=1)])
    finally:
        await admin.close()
    payload = os.urandom(SIZE)
    return {"produce": await _produce(settings, payload), "consume": await _consume(settings),
            "connect_ms": await _connect_ms(settings)}


def _run(home: Path, security: BrokerSecurity | None) -> dict[str, float]:
    broker = LocalBroker(BrokerConfig(home=home, port=free_port(), controller_port=free_port(), heap_mb=1024,
                                      security=security))
    broker.start(timeout_s=90)
    try:
        return asyncio.run(_measure(broker.config.admin_settings()))
    finally:
        broker.stop()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="liaison-bench-security-") as tmp:
        plain = _run(Path(tmp) / "plain", None)
        secured = _run(Path(tmp) / "secured", BrokerSecurity(DevTls(Path(tmp) / "tls"), new_password()))
    result: dict[str, Any] = {
        "messages": MESSAGES, "record_bytes": SIZE,
        "plain_produce_msgs_per_s": round(plain["produce"]),
        "secured_produce_msgs_per_s": round(secured["produce"]),
        "produce_ratio_secured_vs_plain": round(secured["produce"] / plain["produce"], 3),
        "plain_consume_msgs_per_s": round(plain["consume"]),
        "secured_consume_msgs_per_s": round(secured["consume"]),
        "consume_ratio_secured_vs_plain": round(secured["consume"] / plain["consume"], 3),
        "plain_connect_ms_p50": round(plain["connect_ms"], 1),
        "secured_connect_ms_p50": round(secured["connect_ms"], 1),
    }
    report("security", result)


if __name__ == "__main__":
    main()
