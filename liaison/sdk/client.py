"""The agency client: send to your outbox, read your inbox and receipts, ask a query and await its reply.

One `AgencyClient` acts for one agency. It writes only that agency's `*.out.<AGENCY>` topics and
reads only its `*.in.<AGENCY>` and `receipts.in.<AGENCY>` topics, as the bus's ACLs will require.
Records are plain dicts shaped like the Avro schemas (build them with `liaison.sdk.envelope`,
`alert`, `query`, `reply`); on the wire they are in the Confluent format, with the schema ids the
registry gives.

    async with AgencyClient(load(KafkaSettings), "FR-PN") as client:
        q = query(envelope("FR-PN", to=["DE-BKA"], case_id="CASE-1"), "Is he known to you?")
        answer = await client.ask(q, timeout_s=60)
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError

from liaison.codec import Codec, UnknownSchemaId
from liaison.contract import learn_unknown, ready_codec
from liaison.core.lifecycle import AsyncResource
from liaison.core.settings import KafkaSettings
from liaison.directory import OFFICER_CODE, check_agency_code
from liaison.errors import BrokerUnavailable, DecodeError, LiaisonError
from liaison.registry_client import RegistryClient
from liaison.schemas import MESSAGE_TYPES
from liaison.sdk.builders import MessageError
from liaison.security.acls import agency_group_prefix
from liaison.topics import FAMILIES

Record = dict[str, Any]
T = TypeVar("T")

FETCH_MAX_WAIT_MS = 50
"""Long-poll wait of the client's consumers: short, so that a new message is seen at once."""


# -- errors ---------------------------------------------------------------------------------------
class NotStarted(LiaisonError):
    """The client was used before `start()` (or outside `async with`)."""

    def __init__(self) -> None:
        super().__init__("AgencyClient is not started: call `await client.start()` first, "
                         "or use `async with AgencyClient(settings, agency) as client:`")


class AgencyNotOnboarded(LiaisonError):
    """The agency's topics do not exist on this bus."""


class TopicMissing(LiaisonError):
    """A topic the operation needs does not exist (the broker's auto-creation is off on purpose)."""


class SendFailed(LiaisonError):
    """The broker did not acknowledge a message; sending it again may work."""

    retriable = True


class ReplyTimeout(LiaisonError, TimeoutError):
    """No reply to a query arrived before its timeout or deadline."""

    retriable = True

    def __init__(self, query_id: str, waited_s: float, receipts: Sequence[Record] = ()) -> None:
        told = "; ".join(f"{r.get('recipient') or '?'} {r['kind']}"
                         + (f" ({r['reason_code']})" if r.get("reason_code") else "") for r in receipts)
        super().__init__(
            f"no reply to query {query_id} within {waited_s:.1f} s"
            + (f"; the bus reported: {told}" if told else "; the bus reported nothing about it yet")
            + " - wait longer (timeout_s), or follow it later with `liaison trace " + query_id + "`")
        self.query_id = query_id
        self.waited_s = waited_s
        self.receipts = list(receipts)


class UndecodableMessage(DecodeError):
    """A record on one of the agency's topics cannot be read; it is skipped when iteration goes on."""

    def __init__(self, message: str, *, topic: str, partition: int, offset: int) -> None:
        super().__init__(message)
        self.topic = topic
        self.partition = partition
        self.offset = offset


# -- shared helpers (also used by the CLI and audit views) ----------------------------------------
@contextlib.asynccontextmanager
async def kafka_faults(settings: KafkaSettings, doing: str) -> AsyncIterator[None]:
    """Turn aiokafka's errors into Liaison errors that say what to fix."""
    try:
        yield
    except KafkaConnectionError:
        raise BrokerUnavailable(
            f"{doing}: no Kafka broker answers at {settings.bootstrap_servers} - check "
            "LIAISON_BOOTSTRAP_SERVERS, or start the bus with `liaison up`") from None
    except KafkaTimeoutError:
        raise BrokerUnavailable(
            f"{doing}: the Kafka broker at {settings.bootstrap_servers} did not answer in time") from None
    except KafkaError as exc:
        raise BrokerUnavailable(f"{doing}: Kafka refused: {exc}") from None


async def missing_topics(consumer_or_producer: AIOKafkaConsumer | AIOKafkaProducer,
                         topics: Iterable[str]) -> list[str]:
    """The topics of `topics` the cluster does not have, from one metadata request."""
    # aiokafka has no public call to ask about topics a client does not use yet.
    client = consumer_or_producer._client if isinstance(consumer_or_producer, AIOKafkaConsumer) \
        else consumer_or_producer.client
    wanted = list(topics)
    for topic in wanted:
        client.add_topic(topic)
    await client.force_metadata_update()
    return [t for t in wanted if not client.cluster.partitions_for_topic(t)]


async def partitions_of(consumer: AIOKafkaConsumer, topics: Iterable[str]) -> list[TopicPartition]:
    """Every partition of `topics`, or TopicMissing naming the topics that do not exist."""
    wanted = list(topics)
    missing = await missing_topics(consumer, wanted)
    if missing:
        raise TopicMissing(f"topic {', '.join(missing)} does not exist on this bus, or this user may not "
                           "see it - check LIAISON_TOPIC_PREFIX and the credential in use, and that the bus "
                           "is provisioned (`liaison up`) and the agency onboarded (`liaison agency add`)")
    return [TopicPartition(t, p) for t in wanted
            for p in sorted(consumer.partitions_for_topic(t) or ())]


async def decode_learning(codec: Codec, registry: RegistryClient | None, data: bytes | None,
                          ) -> tuple[str, Record]:
    """Decode a wire record, fetching a writer schema the codec has not seen from the registry."""
    try:
        return codec.decode(data)
    except UnknownSchemaId as exc:
        if registry is None or not await learn_unknown(codec, registry, exc.schema_id):
            raise
    return codec.decode(data)


def message_key(record: Record) -> bytes:
    """Partition key of a message: its case id when present, else its message id."""
    env = record["envelope"]
    return str(env.get("case_id") or env["message_id"]).encode()


# -- subscriptions --------------------------------------------------------------------------------
class Subscription(Generic[T]):
    """Records of some of the agency's topics, read by one consumer group, at least once.

    The offset of a record is committed when the caller asks for the next one, that is once the
    body of `async for` has finished with it (or when `async with` exits without an error). A
    record whose handling raised is therefore read again by the group's next reader.
    """

    def __init__(self, client: AgencyClient, topics: Sequence[str], group_id: str,
                 convert: Callable[[str, str, Record], T], *, until_end: bool = False,
                 from_beginning: bool = True) -> None:
        self.topics = list(topics)
        self.group_id = group_id
        self._client = client
        self._convert = convert
        self._until_end = until_end
        self._reset = "earliest" if from_beginning else "latest"
        self._consumer: AIOKafkaConsumer | None = None
        self._buffer: deque[ConsumerRecord[bytes, bytes]] = deque()
        self._pending: ConsumerRecord[bytes, bytes] | None = None
        self._ends: dict[TopicPartition, int] | None = None
        self._closed = False

    async def _open(self) -> AIOKafkaConsumer:
        settings = self._client.settings
        consumer = AIOKafkaConsumer(
            **settings.kafka_kwargs(), group_id=self.group_id, enable_auto_commit=False,
            auto_offset_reset=self._reset, isolation_level="read_committed",
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        )
        async with kafka_faults(settings, f"reading {', '.join(self.topics)}"):
            await consumer.start()
            try:
                await partitions_of(consumer, self.topics)
                consumer.subscribe(self.topics)
            except BaseException:
                await consumer.stop()
                raise
        self._consumer = consumer
        return consumer

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> T:
        if self._closed:
            raise StopAsyncIteration
        consumer = self._consumer or await self._open()
        await self._commit_pending()
        done = False
        async with kafka_faults(self._client.settings, f"reading {', '.join(self.topics)}"):
            while not self._buffer and not done:
                done = self._until_end and await self._at_end(consumer)
                if not done:
                    batches = await consumer.getmany(timeout_ms=200)
                    for tp in sorted(batches):
                        self._buffer.extend(batches[tp])
        if done:
            await self.aclose()
            raise StopAsyncIteration
        rec = self._buffer.popleft()
        self._pending = rec  # committed on the next call: the caller has handled it by then
        try:
            name, record = await decode_learning(self._client.codec, self._client.registry, rec.value)
        except DecodeError as exc:
            raise UndecodableMessage(f"{rec.topic}[{rec.partition}]@{rec.offset}: {exc}", topic=rec.topic,
                                     partition=rec.partition, offset=rec.offset) from None
        return self._convert(rec.topic, name, record)

    async def _at_end(self, consumer: AIOKafkaConsumer) -> bool:
        """Whether every assigned partition was read up to its end as it was when first assigned."""
        assigned = consumer.assignment()
        if not assigned:
            return False  # still joining the group
        if self._ends is None:
            self._ends = await consumer.end_offsets(list(assigned))
        for tp in assigned:
            if tp in self._ends and await consumer.position(tp) < self._ends[tp]:
                return False
        return True

    async def _commit_pending(self) -> None:
        rec, self._pending = self._pending, None
        if rec is not None and self._consumer is not None:
            tp = TopicPartition(rec.topic, rec.partition)
            if tp in self._consumer.assignment():  # after a rebalance the new owner re-reads it
                async with kafka_faults(self._client.settings, "committing the inbox position"):
                    await self._consumer.commit({tp: rec.offset + 1})

    async def aclose(self, *, commit_pending: bool = False) -> None:
        """Stop reading; the record being handled is committed only with `commit_pending`."""
        if commit_pending and not self._closed:
            await self._commit_pending()
        self._closed = True
        self._pending = None
        self._buffer.clear()
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()
        self._client._forget(self)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose(commit_pending=et is None)


# -- the client -----------------------------------------------------------------------------------
class AgencyClient(AsyncResource):
    """One agency's connection to the bus: its outboxes to write, its inboxes and receipts to read.

    Args:
        settings: how to reach the broker and the registry (`load(KafkaSettings)` reads LIAISON_*).
        agency: the agency's code, e.g. FR-PN; its topics must exist (`liaison agency add`). Or a
            liaison officer's code, e.g. FR-PN-BOGOTA (`liaison officer post`): it sends for its
            agency, naming itself in envelope.officer.
        codec: a ready Codec to use instead of asking the registry (tests, or many clients at once).
    """

    def __init__(self, settings: KafkaSettings, agency: str, *, codec: Codec | None = None) -> None:
        self.settings = settings
        code = agency.strip().upper()
        self.agency = code if OFFICER_CODE.match(code) else check_agency_code(code, "agency")
        self._codec = codec
        self._registry: RegistryClient | None = None
        self._producer: AIOKafkaProducer | None = None
        self._subscriptions: list[Subscription[Any]] = []
        self._started = False

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect, check the agency's topics exist and load the schemas; safe to call twice."""
        if self._started:
            return
        self._started = True
        try:
            await self._connect()
        except BaseException:
            await self.stop()
            raise

    async def _connect(self) -> None:
        self._producer = AIOKafkaProducer(**self.settings.kafka_kwargs(), enable_idempotence=True,
                                          acks="all", linger_ms=2)
        async with kafka_faults(self.settings, f"connecting as {self.agency}"):
            await self._producer.start()
            missing = await missing_topics(self._producer, self.settings.topics.agency_topics(self.agency))
        if missing:
            raise AgencyNotOnboarded(
                f"{self.agency} is not onboarded on this bus: {len(missing)} of its topics are missing "
                f"({', '.join(missing[:2])}{', ...' if len(missing) > 2 else ''}) - run "
                f"`liaison agency add {self.agency} ...`, or check LIAISON_TOPIC_PREFIX")
        self._registry = RegistryClient.from_settings(self.settings)
        if self._codec is None:
            self._codec = await ready_codec(self._registry)

    async def stop(self) -> None:
        """Close every open subscription (uncommitted records are read again later), then the producer."""
        self._started = False
        for sub in list(self._subscriptions):
            await sub.aclose()
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()
        registry, self._registry = self._registry, None
        if registry is not None:
            await registry.close()


    def __del__(self) -> None:
        if getattr(self, "_producer", None) is not None:
            warnings.warn(f"AgencyClient for {self.agency} was not stopped: use `async with` or "
                          "`await client.stop()`", ResourceWarning, stacklevel=1)

    @property
    def codec(self) -> Codec:
        if self._codec is None or not self._started:
            raise NotStarted
        return self._codec

    @property
    def registry(self) -> RegistryClient | None:
        return self._registry

    def _forget(self, sub: Subscription[Any]) -> None:
        with contextlib.suppress(ValueError):
            self._subscriptions.remove(sub)

    # -- writing --------------------------------------------------------------------------------
    async def send(self, message_type: str, record: Record) -> None:
        """Write a message to this agency's outbox; returns once the broker has it (acks=all).

        The partition key is the case id, else the message id. Raises MessageError when the
        message is not this agency's to send, EncodeError when it does not fit its schema.
        """
        if message_type not in MESSAGE_TYPES:
            raise MessageError(f"message type {message_type!r}: agencies send {', '.join(MESSAGE_TYPES)}")
        producer = self._producer
        if producer is None or not self._started:
            raise NotStarted
        env = record.get("envelope")
        if not isinstance(env, dict) or "message_id" not in env:
            raise MessageError("the record has no envelope with a message_id: build it with "
                               "liaison.sdk.envelope(...)")
        sender = env.get("officer") or env.get("originator")
        if sender != self.agency:
            raise MessageError(
                f"this client sends for {self.agency}, but the envelope names {sender!r} as "
                f"{'officer' if env.get('officer') else 'originator'}; the router would dead-letter it "
                "(SPOOFED_ORIGINATOR)")
        value = self.codec.encode(message_type, record)
        topic = self.settings.topics.outbox(message_type, self.agency)
        try:
            async with kafka_faults(self.settings, f"sending {message_type} {env['message_id']}"):
                await producer.send_and_wait(topic, value, key=message_key(record))
        except BrokerUnavailable as exc:
            raise SendFailed(f"{exc}; the message may not have been sent - sending it again is safe "
                             "(the router and readers key on its message_id)") from None

    # -- reading --------------------------------------------------------------------------------
    def inbox(self, types: Iterable[str] = MESSAGE_TYPES, group: str | None = None, *,
              until_end: bool = False, from_beginning: bool = True,
              ) -> Subscription[tuple[str, Record]]:
        """`(message_type, record)` for each message delivered to this agency, at least once.

        Reads `<type>s.in.<AGENCY>` for each of `types` in consumer group `<prefix><AGENCY>.<group>`
        (default `<prefix><AGENCY>.inbox`, the prefix being LIAISON_TOPIC_PREFIX), read_committed. The
        offset of a message is committed once the body of the
        `async for` that got it has finished, so a crash or an exception while handling it means the
        group reads it again: make handlers idempotent (key on `envelope.message_id`). Where a group
        has no committed offset yet, reading starts at the oldest message (`from_beginning`) or at
        new ones only. `until_end` stops at the end the topics had when the group was joined.
        """
        chosen = message_types(types)
        return self._subscribe([self.settings.topics.inbox(t, self.agency) for t in chosen],
                               group or "inbox", lambda _topic, name, rec: (name, rec),
                               until_end=until_end, from_beginning=from_beginning)

    def receipts(self, group: str | None = None, *, until_end: bool = False,
                 from_beginning: bool = True) -> Subscription[Record]:
        """Each Receipt the bus sends this agency (delivered, denied and why, overdue, ...), at least once.

        Reads `receipts.in.<AGENCY>` in consumer group `<prefix><AGENCY>.<group>` (default
        `<prefix><AGENCY>.receipts`),
        committing as `inbox` does.
        """
        return self._subscribe([self.settings.topics.receipts(self.agency)], group or "receipts",
                               lambda _topic, _name, rec: rec, until_end=until_end,
                               from_beginning=from_beginning)

    def _subscribe(self, topics: list[str], name: str, convert: Callable[[str, str, Record], T], *,
                   until_end: bool, from_beginning: bool) -> Subscription[T]:
        if not self._started:
            raise NotStarted
        group = f"{agency_group_prefix(self.settings.topics, self.agency)}{name}"  # what its ACL allows
        sub = Subscription(self, topics, group, convert, until_end=until_end,
                           from_beginning=from_beginning)
        self._subscriptions.append(sub)
        return sub

    async def ask(self, query_record: Record, timeout_s: float = 30.0) -> Record:
        """Send a Query and return the first Reply whose `envelope.correlation_id` is its message id.

        Waits `timeout_s` or until the query's `deadline` (or `envelope.expires_at`), whichever comes
        first, then raises ReplyTimeout with what the bus reported (delivered, denied and why). It
        reads without a consumer group, so `inbox()` readers still get the reply too.
        """
        if "question" not in query_record:
            raise MessageError("ask() sends a Query: build it with liaison.sdk.query(...)")
        if not self._started:
            raise NotStarted
        query_id = str(query_record["envelope"]["message_id"])
        wait_s = timeout_s
        for limit in (query_record.get("deadline"), query_record["envelope"].get("expires_at")):
            if limit is not None:
                wait_s = min(wait_s, max(0.0, limit / 1000 - time.time()))
        topics = self.settings.topics
        receipts: list[Record] = []
        started = time.monotonic()
        async with self._tail([topics.inbox("Reply", self.agency), topics.receipts(self.agency)]) as consumer:
            await self.send("Query", query_record)
            reply = await self._await_reply(consumer, query_id, started + wait_s, receipts)
        if reply is not None:
            return reply
        raise ReplyTimeout(query_id, time.monotonic() - started, receipts)

    async def send_and_track(self, message_type: str, record: Record, *, timeout_s: float = 10.0,
                             ) -> list[Record]:
        """Send a message, then return the receipts the bus wrote about it: one per recipient decision.

        The router writes every receipt about one message in one transaction, so once the first
        one is visible the rest are too. An empty list means none came within `timeout_s` (is the
        router running? was the message dead-lettered? `liaison trace` tells).
        """
        message_id = record.get("envelope", {}).get("message_id")
        found: list[Record] = []
        async with self._tail([self.settings.topics.receipts(self.agency)]) as consumer:
            await self.send(message_type, record)
            deadline = time.monotonic() + timeout_s
            ends: dict[TopicPartition, int] | None = None
            while (left := deadline - time.monotonic()) > 0:
                if ends is not None and all([await consumer.position(tp) >= end for tp, end in ends.items()]):
                    break
                batches = await consumer.getmany(timeout_ms=max(1, int(min(left, 0.5) * 1000)))
                for records in batches.values():
                    for rec in records:
                        try:
                            name, receipt = await decode_learning(self.codec, self._registry, rec.value)
                        except DecodeError:
                            continue
                        if name == "Receipt" and receipt["envelope"].get("correlation_id") == message_id:
                            found.append(receipt)
                if found and ends is None:
                    ends = await consumer.end_offsets(list(consumer.assignment()))
        return found

    @contextlib.asynccontextmanager
    async def _tail(self, topics: list[str]) -> AsyncIterator[AIOKafkaConsumer]:
        """A group-less consumer of `topics`, positioned at their ends before anything is sent."""
        if not self._started:
            raise NotStarted
        consumer = AIOKafkaConsumer(
            **self.settings.kafka_kwargs(), group_id=None, enable_auto_commit=False,
            isolation_level="read_committed", fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        )
        try:
            async with kafka_faults(self.settings, f"reading {', '.join(topics)}"):
                await consumer.start()
                partitions = await partitions_of(consumer, topics)
                consumer.assign(partitions)
                await consumer.seek_to_end(*partitions)
                for tp in partitions:  # fix the positions now, so that nothing sent later is missed
                    await consumer.position(tp)
            yield consumer
        finally:
            await consumer.stop()

    async def _await_reply(self, consumer: AIOKafkaConsumer, query_id: str, deadline: float,
                           receipts: list[Record]) -> Record | None:
        """The first reply to `query_id` before `deadline` (monotonic), noting receipts about it."""
        while (left := deadline - time.monotonic()) > 0:
            batches = await consumer.getmany(timeout_ms=max(1, int(min(left, 0.5) * 1000)))
            for records in batches.values():
                for rec in records:
                    try:
                        name, found = await decode_learning(self.codec, self._registry, rec.value)
                    except DecodeError:
                        continue  # not ours to judge here; `inbox()` and `receipts()` report it
                    if found["envelope"].get("correlation_id") != query_id:
                        continue
                    if name == "Reply":
                        return found
                    if name == "Receipt":
                        receipts.append(found)
        return None


_TYPE_NAMES = {**{m.lower(): m for m in MESSAGE_TYPES}, **{f: m for m, f in FAMILIES.items()}}


def message_types(types: Iterable[str]) -> list[str]:
    """Message type names from any case or the family names (query, queries, Reply)."""
    out: list[str] = []
    for t in types:
        found = _TYPE_NAMES.get(t.strip().lower())
        if found is None:
            raise MessageError(f"message type {t!r}: choose from {', '.join(MESSAGE_TYPES)}")
        if found not in out:
            out.append(found)
    if not out:
        raise MessageError(f"no message type chosen: give one or more of {', '.join(MESSAGE_TYPES)}")
    return out
