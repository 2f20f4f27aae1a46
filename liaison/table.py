"""A compacted topic read as a table, like a Kafka Streams KTable: the bus's only state store.

Each service follows the tables it needs (read_committed, no consumer group) and keeps the latest
value per key in a store: in memory for small tables, on disk (`liaison/store.py`) for state that
grows with traffic. A disk store keeps the positions it reflects, so a restart reads only what
came after them. A service can wait until its view includes everything committed up to now,
which closes the window between another instance's commit and this view.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from liaison.checkpoint import cluster_id, resume
from liaison.core.lifecycle import AsyncResource
from liaison.core.settings import KafkaSettings
from liaison.errors import BrokerUnavailable
from liaison.store import MemoryStore, Store

log = structlog.get_logger(__name__)

Decoder = Callable[[bytes], Any]
Marker = Callable[[str, Any], "tuple[str, bool] | None"]


def json_value(data: bytes) -> Any:
    return json.loads(data)


def json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


class CompactedTable(AsyncResource):
    """Latest value per key of one compacted topic; tombstones delete the key."""

    def __init__(self, settings: KafkaSettings, topic: str, *, decode: Decoder = json_value,
                 on_change: Callable[[dict[str, Any]], None] | None = None,
                 fetch_max_wait_ms: int = 500, store: Store | None = None,
                 mark: Marker | None = None) -> None:
        """`fetch_max_wait_ms`: the long poll; short for a table someone waits on in its hot path.
        `store`: where the values live; in memory unless given. `mark`: which name a change adds
        to or takes from the store's marked set, written with it (so a restart finds, say, the
        open queries without reading every value)."""
        self._mark = mark
        self.topic = topic
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self.items: Store = store if store is not None else MemoryStore()
        self.restored_from: dict[int, int] = {}  # positions a disk store already held at start
        self.records_read = 0  # since start: with a checkpoint, only what came after it
        self._settings = settings
        self._decode = decode
        self._on_change = on_change
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._positions: dict[TopicPartition, int] = {}
        self._advanced = asyncio.Condition()

    async def start(self, *, timeout_s: float = 30.0) -> None:
        """Start following and return once the view holds everything committed at start."""
        if self._consumer is not None:
            return
        self._consumer = AIOKafkaConsumer(
            **self._settings.kafka_kwargs(), group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", isolation_level="read_committed",
            fetch_max_wait_ms=self._fetch_max_wait_ms,
        )
        await self._consumer.start()
        partitions = await self._partitions(timeout_s)
        self._consumer.assign(partitions)
        # no fetch until the start has its offsets: behind a long poll pending on the same
        # connection, the broker answers them only once the poll returns (fetch_max_wait_ms)
        self._consumer.pause(*partitions)
        await self._resume(partitions)
        ends = await self._consumer.end_offsets(partitions)
        self._consumer.resume(*partitions)
        self._task = asyncio.create_task(self._follow(), name=f"table:{self.topic}")
        if not await self._reach(ends, timeout_s):
            raise BrokerUnavailable(f"could not read {self.topic} to its end within {timeout_s:.0f} s")

    async def _resume(self, partitions: list[TopicPartition]) -> None:
        """Start each partition where the store left off, or from the beginning (see
        `liaison.checkpoint`: a store of another cluster or topic is emptied and filled again)."""
        assert self._consumer is not None
        source = {"topic": self.topic,
                  "cluster": await cluster_id(self._consumer, self.topic, self._settings.bootstrap_servers)}
        if self._mark is not None:  # marks another marker wrote (or none, before) are not these
            source["marks"] = getattr(self._mark, "__qualname__", type(self._mark).__name__)
        found = await resume(self._consumer, self.items, partitions, source)
        self.restored_from = found.held
        for tp in partitions:
            if tp.partition in found.held:
                self._consumer.seek(tp, found.held[tp.partition])
                self._positions[tp] = found.held[tp.partition]
            else:
                await self._consumer.seek_to_beginning(tp)

    async def _partitions(self, timeout_s: float) -> list[TopicPartition]:
        assert self._consumer is not None
        deadline = time.monotonic() + timeout_s
        while True:
            # aiokafka has no public call to learn an unsubscribed topic's partitions.
            client = self._consumer._client
            client.add_topic(self.topic)
            await client.force_metadata_update()
            found = self._consumer.partitions_for_topic(self.topic)
            if found:
                return [TopicPartition(self.topic, p) for p in sorted(found)]
            if time.monotonic() > deadline:
                raise BrokerUnavailable(f"topic {self.topic} does not exist (run `liaison up`)")
            await asyncio.sleep(0.2)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        self.items.close()

    def put_local(self, key: str, value: Any, encoded: bytes | None = None) -> None:
        """Apply a write this process just committed, before the topic echoes it back; `encoded` is
        the value's JSON as written, when at hand."""
        self._apply({key: value}, encoded={key: encoded} if encoded is not None else None)

    def put_many_local(self, changes: dict[str, Any], encoded: dict[str, bytes] | None = None) -> None:
        """`put_local` for many keys, in one write."""
        if changes:
            self._apply(changes, encoded=encoded)

    def _apply(self, changes: dict[str, Any], positions: dict[int, int] | None = None,
               encoded: dict[str, bytes] | None = None) -> None:
        marks = None
        if self._mark is not None:
            marks = dict(m for key, value in changes.items() if (m := self._mark(key, value)) is not None)
        self.items.apply(changes, positions, encoded, marks)
        if self._on_change is not None and changes:
            self._on_change(changes)

    async def _follow(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=500, max_records=5000)
            changes: dict[str, Any] = {}
            encoded: dict[str, bytes] = {}
            before = dict(self._positions)
            for tp, records in batches.items():
                self.records_read += len(records)
                for rec in records:
                    if rec.key is None:
                        continue
                    try:
                        key = rec.key.decode()
                        changes[key] = None if rec.value is None else self._decode(rec.value)
                        if rec.value is not None and self._decode is json_value:
                            encoded[key] = rec.value
                    except ValueError as exc:
                        log.warning("unreadable table record skipped", topic=self.topic,
                                    offset=rec.offset, error=str(exc))
                if records:
                    self._positions[tp] = records[-1].offset + 1
            for tp in self._consumer.assignment():
                self._positions[tp] = max(self._positions.get(tp, 0), await self._consumer.position(tp))
            moved = {tp.partition: at for tp, at in self._positions.items() if before.get(tp) != at}
            self._apply(changes, moved, encoded)  # the values and the positions they reach, in one write
            async with self._advanced:
                self._advanced.notify_all()

    async def wait_caught_up(self, *, timeout_s: float = 10.0) -> bool:
        """Wait until the view holds every record committed before this call; False on timeout."""
        consumer = self._consumer
        assert consumer is not None
        return await self._reach(await consumer.end_offsets(list(consumer.assignment())), timeout_s)

    async def _reach(self, targets: dict[TopicPartition, int], timeout_s: float) -> bool:
        def reached() -> bool:
            return all(self._positions.get(tp, 0) >= end for tp, end in targets.items())

        async with self._advanced:
            try:
                await asyncio.wait_for(self._advanced.wait_for(reached), timeout_s)
            except TimeoutError:
                return False
        return True
