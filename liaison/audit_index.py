"""The operator's index of the audit trail, on disk, so that `liaison case` and `liaison trace` read
only what the bus appended since the last question, not years of audit from offset 0.

Where: `<state_dir>/audit-index/<audit topic>` (`LIAISON_STATE_DIR`, default `.run/state`), mode
0700: it holds a copy of the audit rows. Deleting the folder drops the index; the next question
builds it again. It is one folder of stores (liaison/store.py, RocksDB):

- `<prefix>bus.audit`: every audit record's row, filed under the names `audit_names` gives it (its
  case, its message, the message it answers or passes on).
- `<prefix>bus.deadletter`: where each dead letter is (partition, offset), filed under the refused
  message's id and its own.
- `<prefix>bus.queries`: the query lifecycles, as `CompactedTable` keeps them on disk.

What is kept, and why: audit rows whole (about 400 bytes each in JSON, before RocksDB compresses
them), so that an answer needs no record from Kafka, only one local read per row; positions alone
would make a case of a thousand decisions a thousand fetches. Dead letters only by position: each
carries the refused message itself (its content, perhaps biometric data), which should not be
copied to an operator's disk; they are few and kept 30 days, so `trace` fetches the ones it needs
from Kafka, and one the topic no longer holds is missing from the answer, as from a scan.

Each store keeps, in the same write as its entries, the offsets they reach and their source: the
cluster's id and the topic's id (liaison/checkpoint.py, the check `CompactedTable` makes). A store
from another cluster, a topic deleted and created again, or records deleted before they were read
empty the store, and the question builds it again. Records the topic's retention deleted are dropped
from the index too: it never answers with more than the bus still has.

One command at a time: the folder is locked (`StateDir`). Another command waits `LOCK_WAIT_S` for it
(a repeated question holds it well under a second) and then reads the topics itself, as with
`--no-index`, rather than wait for a first build that may take minutes. A build is written in steps
of `CHUNK` records with their offsets, so one cut short (`--timeout`, Ctrl-C) goes on from there;
once done it is compacted, so that the questions after it do not wait for RocksDB's merges.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import structlog
from aiokafka import TopicPartition

from liaison.audit_view import (
    EVER,
    ROW_FIELDS,
    Item,
    Reading,
    Record,
    TopicScan,
    Trace,
    Window,
    audit_names,
    audit_row,
    case_thread,
    dead_letter_view,
    letter_names,
    query_states,
    sort_rows,
    trace_message,
)
from liaison.checkpoint import Resume, cluster_id, resume
from liaison.core.lifecycle import AsyncResource
from liaison.core.settings import KafkaSettings
from liaison.errors import ConfigError, LiaisonError
from liaison.kafka_admin import topic_ids
from liaison.sdk.client import kafka_faults
from liaison.store import DiskStore, StateDir

log = structlog.get_logger(__name__)
T = TypeVar("T")

FOLDER = "audit-index"
LOCK_WAIT_S = 3.0
CHUNK = 5_000  # records per write to the stores while building
COMPACT_AFTER = 20_000
"""Records read by one update after which the stores are compacted before the command ends: a few
RocksDB memtables' worth, which a later command would otherwise merge (and its close wait for)."""

Entry = tuple[list[str], Any]
"""What the index keeps of a record: the names it is found by, and a payload (JSON)."""
Indexer = Callable[[TopicScan, Item], Awaitable[Entry | None]]


class IndexBusy(LiaisonError):
    """Another command holds the index folder."""


def index_folder(state_dir: Path, settings: KafkaSettings) -> Path:
    """The index of this bus's audit trail: one per audit topic (prefix), so that buses do not mix."""
    return state_dir / FOLDER / settings.topics.audit


@contextlib.asynccontextmanager
async def claimed(folder: Path, wait_s: float) -> AsyncIterator[StateDir | None]:
    """The folder, held by this process alone; None if another still holds it after `wait_s`."""
    folder.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            state = StateDir.claim(folder.parent, FOLDER, folder.name)
            break
        except ConfigError:  # held by another command
            if time.monotonic() >= deadline:
                yield None
                return
            await asyncio.sleep(0.05)
    try:
        for private in (folder.parent, folder):
            private.chmod(0o700)  # made before it was private, or under a permissive umask
        yield state
    finally:
        state.release()


def _entry_key(partition: int, offset: int) -> str:
    return f"@{partition:05d}/{offset:020d}"


def _name_key(name: str, partition: int, offset: int) -> str:
    return f"{name}\x00{partition:05d}/{offset:020d}"


def _position(key: str) -> tuple[int, int]:
    """(partition, offset) at the end of an entry or name key."""
    partition, offset = key[-26:].split("/")
    return int(partition), int(offset)


@dataclass(frozen=True, slots=True)
class Hit:
    partition: int
    offset: int
    timestamp: int
    names: list[str]
    payload: Any


@dataclass(slots=True)
class _Pending:
    """What a store is to take in its next write."""

    changes: dict[str, Any] = field(default_factory=dict)
    encoded: dict[str, bytes] = field(default_factory=dict)  # name keys' values, JSON already
    positions: dict[int, int] = field(default_factory=dict)


class TopicIndex(AsyncResource):
    """Records of some topics filed by name in a folder of disk stores, brought up to date on demand."""

    def __init__(self, settings: KafkaSettings, folder: Path, indexers: Mapping[str, Indexer], *,
                 lock_wait_s: float = LOCK_WAIT_S) -> None:
        self.settings = settings
        self.folder = folder
        self._indexers = dict(indexers)
        self._lock_wait_s = lock_wait_s
        self._stack: contextlib.AsyncExitStack | None = None
        self._state: StateDir | None = None
        self._stores: dict[str, DiskStore] = {}
        self._scan: TopicScan | None = None

    async def start(self) -> None:
        """Hold the folder (or IndexBusy), open the stores, connect."""
        if self._stack is not None:
            return
        async with contextlib.AsyncExitStack() as stack:
            state = await stack.enter_async_context(claimed(self.folder, self._lock_wait_s))
            if state is None:
                raise IndexBusy(f"the audit index {self.folder} is in use by another command")
            stores = {topic: stack.enter_context(contextlib.closing(state.store(topic)))
                      for topic in self._indexers}
            scan = await stack.enter_async_context(TopicScan(self.settings, list(self._indexers)))
            self._state, self._stores, self._scan = state, stores, scan
            self._stack = stack.pop_all()

    async def stop(self) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()
        self._stores.clear()
        self._state = self._scan = None

    @property
    def scan(self) -> TopicScan:
        assert self._scan is not None, "TopicIndex.start() first"
        return self._scan

    @property
    def records_read(self) -> int:
        """Records read from Kafka since start: with an index up to date, only the new ones."""
        return self.scan.records_read

    def store(self, name: str) -> DiskStore:
        """Another store in the same folder (closed by whoever uses it)."""
        assert self._state is not None, "TopicIndex.start() first"
        return self._state.store(name)

    # -- keeping up -----------------------------------------------------------------------------
    async def update(self, window: Window = EVER) -> bool:
        """Read what the topics gained since the last update into the index. False, having read
        nothing, when `window` starts after what the index holds: reading the window alone is less."""
        scan = self.scan
        topics = list(self._indexers)
        async with kafka_faults(self.settings, f"reading {', '.join(topics)}"):
            cluster = await cluster_id(scan.consumer, topics[0], self.settings.bootstrap_servers)
            ids = await topic_ids(self.settings, topics)
            found: dict[str, Resume] = {}
            for topic, store in self._stores.items():
                source = {"topic": topic, "cluster": cluster, "topic_id": ids[topic]}
                found[topic] = await resume(scan.consumer, store, self._partitions(topic), source)
        for topic, store in self._stores.items():
            self._forget_before(store, found[topic].first)
        start = {tp: found[tp.topic].start(tp) for tp in scan.partitions}
        if window.since_ms is not None:
            first, _ = await scan.bounds(window)
            if any(start[tp] < first[tp] for tp in start):
                return False
        await self._read(start, {tp: found[tp.topic].end[tp] for tp in scan.partitions})
        return True

    def _partitions(self, topic: str) -> list[TopicPartition]:
        return [tp for tp in self.scan.partitions if tp.topic == topic]

    async def _read(self, start: dict[TopicPartition, int], end: dict[TopicPartition, int]) -> None:
        pending = {topic: _Pending() for topic in self._stores}
        count = 0
        async for item in self.scan.items(start=start, end=end):
            step = pending[item.topic]
            entry = await self._indexers[item.topic](self.scan, item)
            if entry is not None:
                names, payload = entry
                step.changes[_entry_key(item.partition, item.offset)] = [item.timestamp, names, payload]
                for name in names:
                    key = _name_key(name, item.partition, item.offset)
                    step.changes[key], step.encoded[key] = 0, b"0"
            step.positions[item.partition] = item.offset + 1
            count += 1
            if count % CHUNK == 0:
                self._flush(pending)
        for tp, offset in end.items():
            pending[tp.topic].positions[tp.partition] = offset
        self._flush(pending)
        if count >= COMPACT_AFTER:
            for store in self._stores.values():
                store.compact()

    def _flush(self, pending: dict[str, _Pending]) -> None:
        """Each store's entries and the offsets they reach, in one write."""
        for topic, step in pending.items():
            self._stores[topic].apply(step.changes, step.positions, step.encoded)
            pending[topic] = _Pending()

    @staticmethod
    def _forget_before(store: DiskStore, first: dict[TopicPartition, int]) -> None:
        """Drop the entries of records the topic no longer has (its retention deleted them)."""
        for tp, offset in first.items():
            doomed: dict[str, Any] = {}
            for key, (_, names, _) in store.prefix(_entry_key(tp.partition, 0)[:7]):
                if _position(key)[1] >= offset:
                    break
                doomed[key] = None
                doomed.update((_name_key(n, *_position(key)), None) for n in names)
                if len(doomed) >= CHUNK:
                    store.apply(doomed)
                    doomed.clear()
            store.apply(doomed)

    # -- answering ------------------------------------------------------------------------------
    def lookup(self, topic: str, name: str, window: Window = EVER) -> list[Hit]:
        """The entries of `topic` filed under `name`, in `window`, in offset order per partition."""
        store = self._stores[topic]
        hits = []
        for key, _ in store.prefix(f"{name}\x00"):
            partition, offset = _position(key)
            entry = store.get(_entry_key(partition, offset))
            if entry is not None and name in entry[1] and window.holds(entry[0]):
                hits.append(Hit(partition, offset, *entry))
        return hits

    async def fetch(self, topic: str, hits: Sequence[Hit]) -> list[Item]:
        """The records at these positions, read from Kafka (gone ones are skipped)."""
        found = []
        for hit in sorted({(h.partition, h.offset) for h in hits}):
            tp = TopicPartition(topic, hit[0])
            found += [item async for item in self.scan.items(start={tp: hit[1]}, end={tp: hit[1] + 1})]
        return found


# == the audit trail's index: what `liaison case` and `liaison trace` ask ===========================
async def _audit_entry(scan: TopicScan, item: Item) -> Entry | None:
    if item.type != "AuditRecord" or item.record is None:
        return None
    row = audit_row(item.record)
    return audit_names(item.key, item.record), [row[name] for name in ROW_FIELDS]


async def _letter_entry(scan: TopicScan, item: Item) -> Entry | None:
    if item.type != "DeadLetter" or item.record is None:
        return None
    return letter_names(await dead_letter_view(scan, item.record)), None


def audit_index(settings: KafkaSettings, folder: Path, *, lock_wait_s: float = LOCK_WAIT_S) -> TopicIndex:
    """The index of the audit trail and of the dead letters that `trace` also reads."""
    topics = settings.topics
    return TopicIndex(settings, folder, {topics.audit: _audit_entry, topics.deadletter: _letter_entry},
                      lock_wait_s=lock_wait_s)


def _row(hit: Hit) -> Record:
    return dict(zip(ROW_FIELDS, hit.payload, strict=True))


async def _answer(settings: KafkaSettings, folder: Path, answer: Callable[[TopicIndex], Awaitable[T]], *,
                  window: Window, reading: Reading, lock_wait_s: float) -> T | None:
    """`answer` from the index brought up to date; None when the window or the lock says to scan."""
    try:
        async with audit_index(settings, folder, lock_wait_s=lock_wait_s) as index:
            if not await index.update(window):
                return None
            found = await answer(index)
            reading.how, reading.records_read = "index", index.records_read
            return found
    except IndexBusy:
        log.warning("the audit index is in use by another command; reading the topics instead",
                    folder=str(folder))
        return None


async def find_case(settings: KafkaSettings, case_id: str, *, folder: Path | None,
                    window: Window = EVER, reading: Reading | None = None,
                    lock_wait_s: float = LOCK_WAIT_S) -> list[Record]:
    """`case_thread` from the index in `folder`, or from the topic (`folder` None: `--no-index`)."""
    reading = reading if reading is not None else Reading()
    if folder is not None:
        async def answer(index: TopicIndex) -> list[Record]:
            return [_row(hit) for hit in index.lookup(settings.topics.audit, f"c:{case_id}", window)]

        rows = await _answer(settings, folder, answer, window=window, reading=reading,
                             lock_wait_s=lock_wait_s)
        if rows is not None:
            return sort_rows(rows)
    return await case_thread(settings, case_id, window=window, reading=reading)


async def find_message(settings: KafkaSettings, message_id: str, *, folder: Path | None,
                       window: Window = EVER, reading: Reading | None = None,
                       lock_wait_s: float = LOCK_WAIT_S) -> Trace:
    """`trace_message` from the index in `folder`, or from the topics (`folder` None)."""
    reading = reading if reading is not None else Reading()
    if folder is not None:
        async def answer(index: TopicIndex) -> Trace:
            out = Trace(message_id)
            topics = settings.topics
            for name in (f"m:{message_id}", f"r:{message_id}"):
                for hit in index.lookup(topics.audit, name, window):
                    rows = out.rows_for(hit.names)
                    assert rows is not None, hit.names  # found under one of its names
                    rows.append(_row(hit))
            letters = [hit for name in (f"m:{message_id}", f"d:{message_id}")
                       for hit in index.lookup(topics.deadletter, name, window)]
            for item in await index.fetch(topics.deadletter, letters):
                if item.type == "DeadLetter" and item.record is not None:
                    out.add_letter(await dead_letter_view(index.scan, item.record))
            return await out.complete(settings, index.store(settings.topics.queries))

        found = await _answer(settings, folder, answer, window=window, reading=reading,
                             lock_wait_s=lock_wait_s)
        if found is not None:
            return found
    return await trace_message(settings, message_id, window=window, reading=reading)


async def find_query_states(settings: KafkaSettings, query_ids: Sequence[str], *, folder: Path | None,
                            lock_wait_s: float = LOCK_WAIT_S) -> dict[str, Record]:
    """`query_states`, with the table kept in the index folder (read from the start when busy)."""
    if folder is None or not query_ids:
        return await query_states(settings, query_ids)
    async with claimed(folder, lock_wait_s) as state:
        return await query_states(settings, query_ids,
                                  store=state.store(settings.topics.queries) if state else None)
