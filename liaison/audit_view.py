"""What oversight and operators read: the audit trail, receipts, inboxes and dead letters.

Topics are read without a consumer group (nothing is committed), read_committed, from the
beginning up to the end offsets they had when the read started: the answer is a consistent
snapshot that ends by itself. `follow` keeps reading after that point. A time window (`Window`)
is turned into offsets by the broker's time index, so only its records are read; the index of
liaison/audit_index.py answers `case` and `trace` without reading the topics whole.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from liaison.codec import Codec
from liaison.contract import ready_codec
from liaison.core.lifecycle import AsyncResource
from liaison.core.settings import KafkaSettings
from liaison.errors import DecodeError, LiaisonError
from liaison.query_record import query_record
from liaison.registry_client import RegistryClient
from liaison.sdk.builders import MessageError
from liaison.sdk.client import decode_learning, kafka_faults, message_key, partitions_of
from liaison.store import Store
from liaison.table import CompactedTable

Record = dict[str, Any]
Offsets = dict[TopicPartition, int]


class NotFound(LiaisonError):
    """Nothing on the bus matches what was asked for."""


@dataclass(frozen=True, slots=True)
class Item:
    """One record read from a topic, decoded when possible."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    type: str | None  # the record type, None when it could not be decoded
    record: Record | None
    error: str | None = None  # why it could not be decoded


@dataclass(frozen=True, slots=True)
class Window:
    """Records whose timestamp (ms since the epoch) lies in [since_ms, until_ms]; None: no bound."""

    since_ms: int | None = None
    until_ms: int | None = None

    def holds(self, timestamp: int) -> bool:
        return (self.since_ms is None or timestamp >= self.since_ms) and \
            (self.until_ms is None or timestamp <= self.until_ms)


EVER = Window()


class TopicScan(AsyncResource):
    """Reads topics from the beginning with no consumer group; decodes with the registry's schemas."""

    def __init__(self, settings: KafkaSettings, topics: Sequence[str], *, codec: Codec | None = None,
                 registry: RegistryClient | None = None) -> None:
        self.settings = settings
        self.topics = list(topics)
        self._codec = codec
        self._registry = registry
        self._own_registry = registry is None
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []
        self.records_read = 0  # records read from Kafka since start

    async def start(self) -> None:
        """Connect, check the topics exist, fetch the schemas; safe to call twice."""
        if self._consumer is not None:
            return
        consumer = AIOKafkaConsumer(
            **self.settings.kafka_kwargs(), group_id=None, enable_auto_commit=False,
            isolation_level="read_committed", auto_offset_reset="earliest", fetch_max_wait_ms=50,
        )
        try:
            async with kafka_faults(self.settings, f"reading {', '.join(self.topics)}"):
                await consumer.start()
                self._consumer = consumer
                self._partitions = await partitions_of(consumer, self.topics)
            if self._registry is None:
                self._registry = RegistryClient.from_settings(self.settings)
            if self._codec is None:
                self._codec = await ready_codec(self._registry)
        except BaseException:
            await consumer.stop()
            self._consumer = None
            await self._close_registry()
            raise

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()
        await self._close_registry()

    async def _close_registry(self) -> None:
        if self._own_registry and self._registry is not None:
            await self._registry.close()
            self._registry = None


    @property
    def codec(self) -> Codec:
        assert self._codec is not None, "TopicScan.start() first"
        return self._codec

    @property
    def consumer(self) -> AIOKafkaConsumer:
        assert self._consumer is not None, "TopicScan.start() first"
        return self._consumer

    @property
    def partitions(self) -> list[TopicPartition]:
        return list(self._partitions)

    async def bounds(self, window: Window) -> tuple[Offsets, Offsets]:
        """(first, end) offsets of the records in `window`, per partition, from the broker's time
        index (ListOffsets by timestamp): reading them reads no record older than the window."""
        consumer, parts = self.consumer, self._partitions
        async with kafka_faults(self.settings, f"reading {', '.join(self.topics)}"):
            end = await consumer.end_offsets(parts)
            first = await consumer.beginning_offsets(parts) if window.since_ms is None \
                else await self._offsets_at(window.since_ms, end)
            if window.until_ms is not None:
                end = await self._offsets_at(window.until_ms + 1, end)
        return first, end

    async def _offsets_at(self, ms: int, end: Offsets) -> Offsets:
        """Per partition, the first offset of a record at or after `ms`; the end when none is."""
        found = await self.consumer.offsets_for_times(dict.fromkeys(end, ms))
        return {tp: end[tp] if at is None else min(at.offset, end[tp]) for tp, at in found.items()}

    async def items(self, *, follow: bool = False, start: Offsets | None = None,
                    end: Offsets | None = None) -> AsyncIterator[Item]:
        """Every record from the beginning to the end taken now; with `follow`, then new ones forever.

        `start`: the partitions to read and the offset each starts at (default: all, from the first
        record). `end`: the offset each stops before (default: the end when the read starts)."""
        consumer = self.consumer
        partitions = list(start) if start is not None else self._partitions
        async with kafka_faults(self.settings, f"reading {', '.join(self.topics)}"):
            consumer.assign(partitions)
            if start is None:
                await consumer.seek_to_beginning(*partitions)
            else:
                for tp, offset in start.items():
                    consumer.seek(tp, offset)
            ends = dict(end) if end is not None else await consumer.end_offsets(partitions)
        while True:
            async with kafka_faults(self.settings, f"reading {', '.join(self.topics)}"):
                if not follow and await self._reached(consumer, ends):
                    return
                batches = await consumer.getmany(timeout_ms=200, max_records=2000)
            for tp in sorted(batches):
                for rec in batches[tp]:
                    if not follow and rec.offset >= ends[tp]:
                        continue
                    self.records_read += 1
                    yield await self._item(rec)

    @staticmethod
    async def _reached(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
        for tp, end in ends.items():
            if await consumer.position(tp) < end:
                return False
        return True

    async def _item(self, rec: Any) -> Item:
        try:
            name, record = await decode_learning(self.codec, self._registry, rec.value)
        except DecodeError as exc:
            return Item(rec.topic, rec.partition, rec.offset, rec.timestamp, rec.key, rec.value,
                        None, None, str(exc))
        return Item(rec.topic, rec.partition, rec.offset, rec.timestamp, rec.key, rec.value, name, record)

    async def read_all(self) -> list[Item]:
        return [item async for item in self.items()]

    def decode_bytes(self, data: bytes | None) -> tuple[str, Record] | None:
        """A record from raw bytes when the codec already knows its schema, else None."""
        try:
            return self.codec.decode(data)
        except DecodeError:
            return None

    async def decode_learning(self, data: bytes | None) -> tuple[str, Record] | None:
        try:
            return await decode_learning(self.codec, self._registry, data)
        except DecodeError:
            return None


# -- case and trace --------------------------------------------------------------------------------
ROW_FIELDS = ("decided_at", "message_type", "message_id", "originator", "recipient", "decision",
              "reason_code", "reason", "case_id", "correlation_id", "derived_from", "redactions",
              "service", "tlp")
"""The fields of an audit record an operator reads, in order."""


def audit_row(audit: Record) -> Record:
    row = {name: audit[name] for name in ROW_FIELDS}
    row["redactions"] = list(row["redactions"])
    return row


def audit_names(key: bytes | None, audit: Record) -> list[str]:
    """What an audit record is found by: `m:` the message decided on; `r:` the message it answers
    or passes on; `c:` its case, when the record is keyed by it (as the router keys a case's records).

    The scan below and the index (liaison/audit_index.py) both match by these names, so that they
    find the same records.
    """
    message_id = audit["message_id"]
    names = [f"m:{message_id}"] + [
        f"r:{other}" for other in dict.fromkeys((audit["correlation_id"], audit["derived_from"]))
        if other is not None and other != message_id]
    case_id = audit["case_id"]
    if case_id is not None and key == case_id.encode():
        names.append(f"c:{case_id}")
    return names


def letter_names(view: Record) -> list[str]:
    """What a dead letter is found by: `m:` the refused message's id, `d:` its own id."""
    names = [f"d:{view['dead_letter_id']}"]
    return [f"m:{view['message_id']}", *names] if view["message_id"] is not None else names


def sort_rows(rows: list[Record]) -> list[Record]:
    """Oldest first."""
    return sorted(rows, key=lambda r: (r["decided_at"], r["message_id"], r["recipient"] or ""))


@dataclass
class Reading:
    """How an answer was read: for an operator's check (`--no-index`) and the benchmark."""

    how: str = ""  # "index", "window" (only the records of --since / --until) or "scan" (all)
    records_read: int = 0  # records read from Kafka for it


async def within(scan: TopicScan, window: Window, reading: Reading | None) -> AsyncIterator[Item]:
    """The records of `window`: only their offsets are read (see `TopicScan.bounds`)."""
    first, end = await scan.bounds(window)
    async for item in scan.items(start=first, end=end):
        if window.holds(item.timestamp):
            yield item
    if reading is not None:
        reading.how = "scan" if window == EVER else "window"
        reading.records_read = scan.records_read


async def case_thread(settings: KafkaSettings, case_id: str, *, window: Window = EVER,
                      reading: Reading | None = None) -> list[Record]:
    """Every routing decision about the messages of one case, oldest first, read from the topic."""
    name = f"c:{case_id}"
    rows = []
    async with TopicScan(settings, [settings.topics.audit]) as scan:
        async for item in within(scan, window, reading):
            if item.type == "AuditRecord" and item.record is not None \
                    and name in audit_names(item.key, item.record):
                rows.append(audit_row(item.record))
    return sort_rows(rows)


async def query_states(settings: KafkaSettings, query_ids: Sequence[str], *,
                       store: Store | None = None) -> dict[str, Record]:
    """The lifecycle records of these queries (`bus.queries`, each assembled from its keys): deadline,
    state, answers, timers. `store`: where the table is kept (a disk store resumes where it was)."""
    if not query_ids:
        return {}
    # a short long-poll: each offsets request of the start waits behind the pending fetch
    async with CompactedTable(settings, settings.topics.queries, store=store, fetch_max_wait_ms=50) as table:
        found = {qid: query_record(table.items.get, qid) for qid in query_ids}
    return {qid: record for qid, record in found.items() if isinstance(record, dict)}


def query_row(state: Record) -> Record:
    """What an operator reads about a query's lifecycle."""
    answers = state.get("answers") or {}
    return {
        "query_id": state["query_id"], "requester": state["requester"],
        "requested": list(state["requested"]), "deadline": state["deadline"], "state": state["state"],
        "answered": sorted(answers), "overdue": list(state.get("overdue") or []),
        "reminded": list(state.get("reminded") or []), "closed_at": state.get("closed_at"),
    }


@dataclass
class Trace:
    """Everything the bus recorded about one message."""

    message_id: str
    decisions: list[Record] = field(default_factory=list)  # audit records about it
    dead_letters: list[Record] = field(default_factory=list)  # it, refused whole
    related: list[Record] = field(default_factory=list)  # decisions about replies to it or copies of it
    query: Record | None = None  # its lifecycle, when it is a query

    @property
    def found(self) -> bool:
        return bool(self.decisions or self.dead_letters or self.related)

    def to_dict(self) -> Record:
        return {"message_id": self.message_id, "decisions": self.decisions,
                "dead_letters": self.dead_letters, "related": self.related, "query": self.query}

    def rows_for(self, names: list[str]) -> list[Record] | None:
        """Where an audit row found by `names` (see `audit_names`) goes; None: not about this message."""
        if f"m:{self.message_id}" in names:
            return self.decisions
        return self.related if f"r:{self.message_id}" in names else None

    def add_letter(self, view: Record) -> None:
        if not {f"m:{self.message_id}", f"d:{self.message_id}"}.isdisjoint(letter_names(view)):
            self.dead_letters.append(view)

    async def complete(self, settings: KafkaSettings, store: Store | None = None) -> Trace:
        """Sort what was found and add the query's lifecycle when the message is a query."""
        self.decisions.sort(key=lambda r: (r["decided_at"], r["recipient"] or ""))
        self.related = sort_rows(self.related)
        if any(d["message_type"] == "Query" for d in self.decisions):
            states = await query_states(settings, [self.message_id], store=store)
            self.query = query_row(states[self.message_id]) if self.message_id in states else None
        return self


async def trace_message(settings: KafkaSettings, message_id: str, *, window: Window = EVER,
                        reading: Reading | None = None) -> Trace:
    """Who got one message, who was refused it and why, whether it was dead-lettered, what answered
    it: read from the topics."""
    out = Trace(message_id)
    topics = settings.topics
    async with TopicScan(settings, [topics.audit, topics.deadletter]) as scan:
        async for item in within(scan, window, reading):
            if item.record is None:
                continue
            if item.type == "AuditRecord":
                rows = out.rows_for(audit_names(item.key, item.record))
                if rows is not None:
                    rows.append(audit_row(item.record))
            elif item.type == "DeadLetter":
                out.add_letter(await dead_letter_view(scan, item.record))
    return await out.complete(settings)


# -- dead letters ----------------------------------------------------------------------------------
async def dead_letter_view(scan: TopicScan, letter: Record) -> Record:
    """A dead letter with what could be read of the original record (its type and message id)."""
    original = await scan.decode_learning(letter["value"])
    env = original[1].get("envelope") if original else None
    return {
        "dead_letter_id": letter["dead_letter_id"], "failed_at": letter["failed_at"],
        "service": letter["service"], "source_topic": letter["source_topic"],
        "source_partition": letter["source_partition"], "source_offset": letter["source_offset"],
        "error_code": letter["error_code"], "error": letter["error"],
        "claimed_originator": letter["claimed_originator"], "outbox_owner": letter["outbox_owner"],
        "message_type": original[0] if original else None,
        "message_id": env.get("message_id") if isinstance(env, dict) else None,
        "case_id": env.get("case_id") if isinstance(env, dict) else None,
        "key": letter["key"].decode(errors="replace") if letter["key"] is not None else None,
        "size": len(letter["value"]) if letter["value"] is not None else 0,
        "original": original[1] if original else None,
        "original_hex": None if original or letter["value"] is None else letter["value"][:64].hex(),
    }


async def dead_letters(settings: KafkaSettings) -> list[Record]:
    """Every dead letter, oldest first."""
    async with TopicScan(settings, [settings.topics.deadletter]) as scan:
        return [await dead_letter_view(scan, item.record) async for item in scan.items()
                if item.type == "DeadLetter" and item.record is not None]


async def find_dead_letter(settings: KafkaSettings, letter_id: str) -> tuple[Record, Record]:
    """(view, raw DeadLetter record) of the dead letter whose id is or starts with `letter_id`."""
    wanted = letter_id.strip().lower()
    if len(wanted) < 4:
        raise NotFound(f"dead letter id {letter_id!r} is too short: give at least 4 characters")
    found: list[tuple[Record, Record]] = []
    async with TopicScan(settings, [settings.topics.deadletter]) as scan:
        async for item in scan.items():
            if item.type == "DeadLetter" and item.record is not None \
                    and item.record["dead_letter_id"].startswith(wanted):
                found.append((await dead_letter_view(scan, item.record), item.record))
    if not found:
        raise NotFound(f"no dead letter {letter_id} on this bus (`liaison deadletter list` shows them)")
    if len({view["dead_letter_id"] for view, _ in found}) > 1:
        raise NotFound(f"{letter_id} matches {len(found)} dead letters: give more of the id")
    return found[0]


@dataclass(frozen=True)
class Replayed:
    dead_letter_id: str
    topic: str
    size: int
    corrected: bool
    message_id: str | None


async def replay(settings: KafkaSettings, letter: Record, corrected: Record | None = None) -> Replayed:
    """Write a dead letter's original value (or a corrected record) to its original outbox again.

    The original key and headers go with the original value; a corrected record is encoded with the
    type its outbox carries and keyed like any message (case id, else message id).
    """
    owner = settings.topics.parse_outbox(letter["source_topic"])
    if owner is None:
        raise MessageError(f"dead letter {letter['dead_letter_id']} came from {letter['source_topic']}, "
                           "which is not an outbox of this bus: replay it by hand")
    message_type, agency = owner
    headers = [(k, v) for k, v in (letter.get("headers") or {}).items()]
    async with RegistryClient.from_settings(settings) as registry:
        if corrected is None:
            value, key, message_id = letter["value"], letter["key"], None
        else:
            env = corrected.get("envelope") or {}
            if env.get("originator") != agency:
                raise MessageError(f"the corrected record names {env.get('originator')!r} as originator "
                                   f"but goes to {agency}'s outbox: the router would refuse it")
            codec = await ready_codec(registry)
            value, key, message_id = codec.encode(message_type, corrected), message_key(corrected), \
                env.get("message_id")
    if value is None:
        raise MessageError(f"dead letter {letter['dead_letter_id']} has no value to replay: give "
                           "--file with a corrected record")
    producer = AIOKafkaProducer(**settings.kafka_kwargs(), enable_idempotence=True, acks="all")
    async with kafka_faults(settings, f"replaying to {letter['source_topic']}"):
        await producer.start()
        try:
            await producer.send_and_wait(letter["source_topic"], value, key=key, headers=headers or None)
        finally:
            await producer.stop()
    return Replayed(letter["dead_letter_id"], letter["source_topic"], len(value), corrected is not None,
                    message_id)


def ms_to_text(ms: int | None) -> str:
    """UTC time of epoch milliseconds, to the second: 2025-03-01 12:00:05."""
    if ms is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000))
