"""Helpers for integration tests: unique topics and bounded reads (never sleep-and-hope)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

T = TypeVar("T")


def unique_name(prefix: str) -> str:
    """A topic or group name no other test uses."""
    return f"{prefix}.{uuid.uuid4().hex[:12]}"


async def create_topics(bootstrap: str, names: Iterable[str], *, partitions: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1) for name in names]
        )
    finally:
        await admin.close()


async def read_until(
    bootstrap: str, topic: str, *, count: int, timeout_s: float = 30.0,
    isolation_level: str = "read_committed", settle_s: float = 0.0,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read `topic` from the start until `count` records arrived or the deadline passed.

    With settle_s > 0, keep reading that long after reaching `count`, so extra records
    (duplicates) would be seen too.
    """
    # Without a group, a subscription is assigned every partition of the topic.
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, isolation_level=isolation_level,
        auto_offset_reset="earliest", enable_auto_commit=False, group_id=None,
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout_s
        records: list[ConsumerRecord[bytes, bytes]] = []
        settle_until: float | None = None
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                records.extend(recs)
            if len(records) >= count:
                if settle_until is None:
                    settle_until = time.monotonic() + settle_s
                if time.monotonic() >= settle_until:
                    break
        return records
    finally:
        await consumer.stop()


async def eventually(
    probe: Callable[[], Awaitable[T]], predicate: Callable[[T], bool], *,
    timeout_s: float = 30.0, interval_s: float = 0.1,
) -> T:
    """Poll `probe` until `predicate` holds on its result; fail with the last value at the deadline."""
    deadline = time.monotonic() + timeout_s
    value = await probe()
    while not predicate(value):
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout_s} s; last value: {value!r}")
        await asyncio.sleep(interval_s)
        value = await probe()
    return value
