"""The router service: one consumer and one transactional producer per instance (KIP-447).

The Kafka clients are confluent-kafka's (librdkafka), not aiokafka's, for three reasons an
agency-facing service cannot do without:
- a record is read whatever its bytes: librdkafka hands over a record with a header key that is
  not UTF-8, where aiokafka's fetcher raises for the whole fetch and stalls the partition forever;
- `send_offsets_to_transaction(offsets, consumer_group_metadata())` fences zombies by consumer
  group generation, so one producer serves every partition however many agencies there are;
- the `cooperative-sticky` assignor moves only the partitions that change owner, so onboarding an
  agency (a new outbox topic) does not revoke everyone else's.

One loop: consume a batch, route it record by record (a record's fault is its own dead letter),
then produce everything and commit the offsets in one transaction, which commits while the next
batch is routed. Rebalance callbacks run inside `consume()`; a revocation waits for the
transaction in flight to end before the partitions go.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import structlog
from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.aio import AIOConsumer
from prometheus_client import CollectorRegistry

from liaison.codec import UnknownSchemaId
from liaison.contract import learn_unknown, ready_codec
from liaison.core.metrics import MetricsServer
from liaison.core.runner import ShutdownSignal
from liaison.directory_feed import DirectoryFeed
from liaison.errors import DecodeError
from liaison.kafka_admin import ensure_topics
from liaison.policy import load_policy
from liaison.registry_client import RegistryClient
from liaison.security.admin import librdkafka_config
from liaison.store import StateDir
from liaison.table import json_bytes
from liaison.topics import FAMILIES
from services.router.metrics import RouterMetrics
from services.router.parking import Parked, Parking
from services.router.pipeline import BatchOutcome, Decoded, Pipeline, Source
from services.router.settings import RouterSettings
from services.router.state import RouterState

log = structlog.get_logger(__name__)

LAG_INTERVAL_S = 5.0  # how often the consumer-lag gauge is measured
ABORT_BACKOFF_S = 0.5  # before reading an aborted batch again
ABORT_TIMEOUT_S = 30.0  # an abort that takes longer restarts the clients
CLOSE_TIMEOUT_S = 10.0  # a consumer that does not close by then is left behind (it is being replaced)
_REBALANCING = frozenset({KafkaError.ILLEGAL_GENERATION, KafkaError.REBALANCE_IN_PROGRESS,
                          KafkaError.UNKNOWN_MEMBER_ID})
"""Why a transaction's offsets are refused while the group rebalances (its generation moved on)."""
PARKED_POLL_S = 0.01  # how often parked records look for the messages they wait for
SWEEP_BATCH = 10_000  # expired state entries deleted in one transaction


class PipelineRestart(Exception):  # a control-flow signal, not an error to report
    """A Kafka-level fault (fenced, fatal producer error): the clients start over, nothing is lost."""


@dataclass
class _Pending:
    """A batch whose transaction is committing."""

    sources: list[Source]
    out: BatchOutcome
    started: float
    task: asyncio.Task[bool] | None = None


class Router:
    """Consume outboxes, route in batches, commit each batch in one transaction."""

    def __init__(self, settings: RouterSettings, *, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry or CollectorRegistry()
        self.metrics = RouterMetrics(self.registry)
        self._state_dir: StateDir | None = None
        self.state: RouterState = RouterState(settings, routed_topic=settings.topics.routed,
                                              consents_topic=settings.topics.consents)
        self.directory = DirectoryFeed(settings)
        self._registry_client = RegistryClient.from_settings(settings)
        self._consumer: AIOConsumer | None = None
        self._producer: Producer | None = None
        self._owned: set[tuple[str, int]] = set()
        self._pending: _Pending | None = None  # the previous batch, committing while this one routes
        self._parking = Parking(wait_s=settings.unknown_ref_wait_s, negative_ttl_s=settings.unknown_ref_ttl_s,
                                max_parked=settings.max_parked)
        self._consumed: dict[tuple[str, int], int] = {}  # per partition: past the last record read
        self._outbox_partitions: int | None = None  # all agencies' outbox partitions, when counted
        self._first_outbox: tuple[str, int] | None = None  # the first of them by name, when counted
        self._next_sweep = time.monotonic() + settings.state_sweep_interval_s
        self._next_group_check = time.monotonic()  # at start: groups that ended while it was down
        self._pipeline: Pipeline | None = None
        self._started = False
        self.lag_interval_s = LAG_INTERVAL_S
        self._lag_task: asyncio.Task[None] | None = None
        self.transactional_id = ""  # known once the state folder is claimed (start)
        self._progress = time.monotonic()  # the last commit, or the last time nothing was waiting
        self._stalled = False
        self._step: asyncio.Task[bool] | None = None

    @property
    def owned_partitions(self) -> int:
        return len(self._owned)

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        s = self.settings
        self._state_dir = StateDir.claim(s.state_dir, "router", s.instance_id)
        # the same name after a restart on this host: InitProducerId aborts the predecessor's transaction
        instance = s.instance_id or f"{socket.gethostname()}-{self._state_dir.path.name}"
        self.transactional_id = f"{s.transactional_prefix}.{instance}"
        self.state = RouterState(s, routed_topic=s.topics.routed, consents_topic=s.topics.consents,
                                 state_dir=self._state_dir)
        policy = load_policy(self.settings.policy_file)
        await ensure_topics(self.settings, self.settings.topics.bus_topics(
            audit_retention_ms=policy.audit_retention_ms))
        codec = await ready_codec(self._registry_client)
        await self.directory.start(publish_file=self.settings.directory_file)
        engine_cache: dict[int, Any] = {}

        def engine() -> Any:
            snapshot = self.directory.current
            compiled = engine_cache.get(id(snapshot))
            if compiled is None:
                engine_cache.clear()
                compiled = engine_cache[id(snapshot)] = policy.compile(snapshot)
            return compiled

        await self.state.start()
        self._pipeline = Pipeline(codec, engine, self.state, self.settings.topics,
                                  limits=self.settings.limits())
        await self._start_clients()
        self._lag_task = asyncio.create_task(self._measure_lag())

    async def _start_clients(self) -> None:
        s = self.settings
        base = librdkafka_config(s)
        producer = Producer({
            **base, "transactional.id": self.transactional_id, "enable.idempotence": True, "acks": "all",
            "linger.ms": 5, "partitioner": "murmur2_random",  # the Java client's: a case keeps its partition
            "transaction.timeout.ms": s.transaction_timeout_ms, "message.max.bytes": s.max_output_bytes,
            "queue.buffering.max.messages": 1_000_000,
            "retry.backoff.ms": 10, "retry.backoff.max.ms": 20,  # a new transaction retries until the
            # previous one's markers are written (CONCURRENT_TRANSACTIONS): 100 ms each by default
        })
        await asyncio.to_thread(producer.init_transactions, 30)  # fences a previous incarnation
        self._producer = producer
        consumer = AIOConsumer({
            **base, "group.id": s.group_id, "enable.auto.commit": False, "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest", "isolation.level": "read_committed",
            "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": s.session_timeout_ms,
            "heartbeat.interval.ms": max(1000, s.session_timeout_ms // 5),
            "topic.metadata.refresh.interval.ms": s.metadata_max_age_ms,
            "fetch.wait.max.ms": s.fetch_max_wait_ms,
        }, max_workers=2)
        await consumer.subscribe([s.topics.outbox_pattern], on_assign=self._on_assign,
                                 on_revoke=self._on_revoke, on_lost=self._on_revoke)
        self._consumer = consumer

    async def _stop_clients(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with contextlib.suppress(KafkaException, RuntimeError, TimeoutError):
                await asyncio.wait_for(consumer.close(), CLOSE_TIMEOUT_S)  # leaves the group at once
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(KafkaException):
                await asyncio.to_thread(producer.flush, 5)
        self._owned.clear()
        self.metrics.partitions.set(0)

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        lag_task, self._lag_task = self._lag_task, None
        if lag_task is not None:
            lag_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lag_task
        await self._stop_clients()  # run() has returned, so no transaction is open
        await self.state.stop()
        if self._state_dir is not None:
            self._state_dir.release()
        await self.directory.stop()
        await self._registry_client.close()

    # -- partitions (called inside consume(), between transactions) -----------------------------
    async def _on_assign(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        self._owned.update((tp.topic, tp.partition) for tp in partitions)
        self._outbox_partitions = self._first_outbox = None  # count again: another instance may have left
        self.metrics.partitions.set(len(self._owned))
        log.info("partitions assigned", count=len(partitions), owned=len(self._owned))

    async def _on_revoke(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        with contextlib.suppress(PipelineRestart):  # its transaction either commits or dies
            await self._settle()  # the transaction in flight commits before its partitions go
        gone = [(tp.topic, tp.partition) for tp in partitions]
        self._owned.difference_update(gone)
        self._outbox_partitions = None
        self._parking.drop(gone)  # the new owner reads them again from the committed offset
        for where in gone:
            self._consumed.pop(where, None)
        self.metrics.partitions.set(len(self._owned))
        log.info("partitions revoked", count=len(partitions), owned=len(self._owned))

    # -- consumer lag ---------------------------------------------------------------------------
    async def _measure_lag(self) -> None:
        """Every few seconds, per topic family: records in owned outbox partitions not routed yet:
        the high watermark minus the committed offset (one OffsetFetch). The watermark is the one
        the last fetch saw, unless nothing was committed for half the stall allowance: then it is
        asked of the leaders, since a fetcher that is stuck sees no new records either."""
        while True:
            await asyncio.sleep(self.lag_interval_s)
            consumer = self._consumer
            if consumer is None or not self._owned:
                continue
            lag = dict.fromkeys(FAMILIES.values(), 0)
            fresh = time.monotonic() - self._progress > self.settings.stall_restart_s / 2
            try:
                owned = [TopicPartition(t, p) for t, p in sorted(self._owned)]
                for tp in await consumer.committed(owned, timeout=self.lag_interval_s):
                    _, high = await consumer.get_watermark_offsets(
                        tp, timeout=self.lag_interval_s, cached=not fresh)
                    parsed = self.settings.topics.parse_outbox(tp.topic)
                    if parsed is not None and high >= 0:
                        lag[FAMILIES[parsed[0]]] += max(0, high - max(tp.offset, 0))
            except (KafkaException, RuntimeError) as exc:  # a rebalance or a restart: measure later
                log.debug("consumer lag not measured", error=str(exc))
                self._watch_stall(None, fresh=fresh)
                continue
            for family, records in lag.items():
                self.metrics.lag.labels(family).set(records)
            self._watch_stall(sum(lag.values()), fresh=fresh)

    def _watch_stall(self, waiting: int | None, *, fresh: bool) -> None:
        """`waiting` records (None: not measurable) and no commit for `stall_restart_s`: ask the loop
        to start the clients over. What was stuck is unknown, so it is logged as an error. Only a
        `fresh` measurement (watermarks asked of the leaders) proves the router idle."""
        now = time.monotonic()
        if waiting == 0:
            if fresh:
                self._progress = now
        elif now - self._progress > self.settings.stall_restart_s and not self._stalled:
            self._stalled = True
            log.error("routing stalled; restarting the Kafka clients", waiting=waiting,
                      seconds=round(now - self._progress, 1))
        elif self._stalled and now - self._progress > 1.5 * self.settings.stall_restart_s:
            log.error("the routing step did not return; cancelling it",
                      seconds=round(now - self._progress, 1))
            if self._step is not None:
                self._step.cancel()  # stuck in a client call: the clients start over without it

    # -- the loop -------------------------------------------------------------------------------
    async def run(self, shutdown: ShutdownSignal) -> None:
        """Route batch after batch until shutdown; a Kafka-level fault restarts the clients.

        Each step runs as a task of its own, so that the stall watch can cancel a step stuck in a
        client call that never returns: the clients then start over as after a fatal error.
        """
        while not shutdown.is_set:
            self._step = asyncio.create_task(self._route_once(shutdown))
            try:
                if not await self._step:
                    break
            except PipelineRestart as exc:
                await self._restart(str(exc))
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():  # run() itself is cancelled
                    raise
                await self._restart("stalled")
            self.metrics.parked.set(len(self._parking))
        await self._settle()

    async def _route_once(self, shutdown: ShutdownSignal) -> bool:
        """Consume one batch and route it; False once shutdown is asked and nothing came."""
        consumer = self._consumer
        assert consumer is not None
        timeout = self.settings.batch_timeout_ms / 1000
        if len(self._parking):  # look often for the messages parked records wait for
            timeout = min(timeout, PARKED_POLL_S)
        messages = await consumer.consume(num_messages=self.settings.batch_max_records, timeout=timeout)
        if shutdown.is_set and not messages:
            return False
        records = []
        for message in messages:
            error = message.error()
            if error is None:
                records.append(message)
            elif error.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error", error=str(error))
        if self._stalled:
            raise PipelineRestart("stalled")
        released = self._parking.ready(self._knows, time.monotonic()) if len(self._parking) else []
        if records or released:
            await self._process(records, released)
        else:
            await self._settle()
        if time.monotonic() >= self._next_sweep:
            await self._sweep()
        elif time.monotonic() >= self._next_group_check:
            await self._sweep(tombstones=False)
        return True

    async def _restart(self, reason: str) -> None:
        """Start the Kafka clients over; what was read and not committed is read again."""
        log.warning("restarting the Kafka clients", reason=reason)
        self.metrics.restarts.labels("stalled" if reason == "stalled" else "fatal").inc()
        self._stalled = False
        self._progress = time.monotonic()
        pending, self._pending = self._pending, None  # its transaction dies with the producer
        if pending is not None and pending.task is not None:
            pending.task.cancel()
        self._parking.clear()  # read again from the committed offsets
        self._consumed.clear()
        await self._stop_clients()
        await asyncio.sleep(ABORT_BACKOFF_S)
        await self._start_clients()

    def _knows(self, message_id: str) -> bool:
        pipeline, pending = self._pipeline, self._pending
        assert pipeline is not None
        return pipeline.knows(message_id, pending.out if pending is not None else None)

    async def _process(self, messages: list[Any], released: list[Parked]) -> None:
        """Route a batch while the previous one commits, then commit it in its own transaction.

        The batch sees the previous batch's state updates before they commit (its outcome is the
        parent of this one). A record citing a message not seen yet is parked and the others are
        routed; parked records whose wait ended come first. If the previous transaction aborts,
        this batch is dropped unsent and both are read again from their first offsets.
        """
        pipeline = self._pipeline
        assert pipeline is not None
        fresh = [Source.of(m) for m in messages]
        decoded = [await self._decode(src) for src in fresh]
        for src in fresh:
            where = (src.topic, src.partition)
            self._consumed[where] = max(self._consumed.get(where, 0), src.offset + 1)
        previous = self._pending
        out = BatchOutcome(parent=previous.out if previous is not None else None)
        await self._refresh_state(decoded, out)
        for parked in released:
            pipeline.handle(parked.source, parked.item, out)
        now = time.monotonic()
        for src, item in zip(fresh, decoded, strict=True):
            refs = pipeline.unknown_refs(item, out)
            if refs and self._parking.has_room() and not all(
                    self._parking.known_missing(ref, now) for ref in refs):
                self._parking.park(src, item, refs, now)
                self.metrics.parked_total.inc()
                continue
            pipeline.handle(src, item, out)
        sources = [p.source for p in released] + fresh
        if not await self._settle():
            await self._seek_firsts(sources + (previous.sources if previous is not None else []))
            return
        out.parent = None  # the previous batch's updates are in the state view now
        self._pending = _Pending(sources, out, time.monotonic())
        self._pending.task = asyncio.create_task(self._commit(sources, out, self._offsets(sources)))

    def _offsets(self, sources: list[Source]) -> dict[tuple[str, int], int]:
        """The offset to commit for each partition of a batch: past everything read, but never past
        a parked record, which must be read again if this instance stops before routing it."""
        offsets = {}
        for where in {(src.topic, src.partition) for src in sources}:
            floor = self._parking.floor(where)
            consumed = self._consumed.get(where, 0)
            offsets[where] = consumed if floor is None else min(floor, consumed)
        return offsets

    async def _settle(self) -> bool:
        """Wait for the batch being committed, if any: False if it was aborted (read again)."""
        pending, self._pending = self._pending, None
        if pending is None or pending.task is None:
            return True
        if not await pending.task:
            return False
        self._committed(pending.out, len(pending.sources), time.monotonic() - pending.started)
        return True

    async def _decode(self, src: Source) -> Decoded:
        """Decoded record, or the DecodeError that sends it to the dead-letter topic."""
        pipeline = self._pipeline
        assert pipeline is not None
        try:
            try:
                return pipeline.decode(src)
            except UnknownSchemaId as exc:
                if not await learn_unknown(pipeline.codec, self._registry_client, exc.schema_id):
                    raise
                return pipeline.decode(src)
        except DecodeError as exc:
            return exc

    async def _refresh_state(self, decoded: list[Decoded], out: BatchOutcome) -> None:
        """One read of the shared state per batch when it holds an id not seen here yet: another
        instance may have routed it (a message id belongs to whoever routed it first)."""
        pipeline = self._pipeline
        assert pipeline is not None
        if any(pipeline.unseen_id(item) for item in decoded) and not await self._alone():
            self.metrics.catch_ups.inc(sum(bool(pipeline.unknown_refs(item, out)) for item in decoded))
            await self.state.catch_up_routed(self.settings.catch_up_timeout_s)

    async def _alone(self) -> bool:
        """Whether this instance owns every outbox partition, and has read `bus.routed` up to date
        since it came to: then no other instance can have routed a message it has not seen, and
        the per-batch read of the shared state is skipped. Counted again after every assignment
        change (another instance joining, or a new agency's outboxes, changes the assignment)."""
        consumer = self._consumer
        assert consumer is not None
        if self._outbox_partitions is None:
            pattern = re.compile(self.settings.topics.outbox_pattern)
            try:
                metadata = await consumer.list_topics(timeout=5)
            except KafkaException:
                return False
            outboxes = {name: t for name, t in metadata.topics.items() if pattern.match(name)}
            self._first_outbox = (min(outboxes), 0) if outboxes else None
            if not await self.state.catch_up_routed(self.settings.catch_up_timeout_s):
                return False  # read the others' last writes first
            self._outbox_partitions = sum(len(t.partitions) for t in outboxes.values())
        return len(self._owned) >= self._outbox_partitions

    async def _ends_groups(self) -> bool:
        """Whether this instance closes the case groups past their end date: the one that owns the
        first outbox partition (by name), so that with several instances the members are told once
        (twice at most, if that partition moves in the middle of a sweep)."""
        return await self._alone() or (self._first_outbox is not None and self._first_outbox in self._owned)

    async def _sweep(self, *, tombstones: bool = True) -> None:
        """Delete the state entries that expired (tombstones), and close the case groups whose end
        date has passed, telling their members: in a transaction of their own."""
        await self._settle()
        if tombstones:
            self._next_sweep = time.monotonic() + self.settings.state_sweep_interval_s
        self._next_group_check = time.monotonic() + self.settings.case_group_check_s
        producer, pipeline = self._producer, self._pipeline
        assert producer is not None
        assert pipeline is not None
        now_ms = int(time.time() * 1000)
        names = self.settings.topics
        expired = {table: table.items.expired(now_ms, SWEEP_BATCH) if tombstones else []
                   for table in (self.state.routed, self.state.consents, self.state.casegroups)}
        endings = BatchOutcome()
        ended = pipeline.end_case_groups(now_ms, endings) if await self._ends_groups() else 0
        if not any(expired.values()) and not ended:
            return
        try:
            producer.begin_transaction()
            for table, keys in expired.items():
                for key in keys:
                    self._produce(producer, table.topic, key.encode(), None)
            for o in endings.outputs:
                self._produce(producer, o.topic, o.key, o.value)
            for key, value in endings.case_groups.items():
                self._produce(producer, names.casegroups, key.encode(), json_bytes(value))
            await asyncio.to_thread(producer.commit_transaction, self._call_timeout_s)
        except KafkaException as exc:
            await self._abort([], exc)
            return
        for table, keys in expired.items():
            for key in keys:
                table.put_local(key, None)
        for key, value in endings.case_groups.items():
            self.state.casegroups.put_local(key, value)
        log.info("expired state deleted", routed=len(expired[self.state.routed]),
                 consents=len(expired[self.state.consents]), case_groups=len(expired[self.state.casegroups]),
                 case_groups_ended=ended, topic=names.routed)
        if any(len(keys) == SWEEP_BATCH for keys in expired.values()):
            self._next_sweep = time.monotonic()  # more are due: go on after the next batch

    async def _commit(self, sources: list[Source], out: BatchOutcome,
                      offsets: dict[tuple[str, int], int]) -> bool:
        """Everything the batch causes, and its offsets, in one transaction. False: aborted, and its
        partitions are positioned to be read again."""
        producer, consumer = self._producer, self._consumer
        assert producer is not None
        assert consumer is not None
        names = self.settings.topics
        try:
            producer.begin_transaction()
            for o in out.outputs:
                self._produce(producer, o.topic, o.key, o.value)
            for k, v in out.routed.items():  # kept encoded: the state store takes the same bytes
                self._produce(producer, names.routed, k.encode(), out.encoded.setdefault(k, json_bytes(v)))
            for topic, updates in ((names.consents, out.consents), (names.queries, out.queries),
                                   (names.casegroups, out.case_groups)):
                for k, v in updates.items():
                    self._produce(producer, topic, k.encode(), json_bytes(v))
            metadata = await consumer.consumer_group_metadata()
            await asyncio.to_thread(producer.send_offsets_to_transaction,
                                    [TopicPartition(t, p, o) for (t, p), o in offsets.items()], metadata,
                                    self._call_timeout_s)
            await asyncio.to_thread(producer.commit_transaction, self._call_timeout_s)
        except KafkaException as exc:
            return await self._abort(sources, exc)
        producer.poll(0)  # serve delivery reports, which would otherwise pile up
        return True

    async def _abort(self, sources: list[Source], exc: KafkaException) -> bool:
        """An abortable error: abort and read the batch again (False). A fatal one (fenced, lost
        producer): restart the Kafka clients; the open transaction dies with the producer."""
        producer = self._producer
        assert producer is not None
        error = exc.args[0] if exc.args else None
        # abortable, or retriable (e.g. CONCURRENT_TRANSACTIONS after a timed-out send): abort and go on
        fatal = not isinstance(error, KafkaError) or error.fatal() or not (
            error.txn_requires_abort() or error.retriable())
        self.metrics.commits.labels("fenced" if fatal else "aborted").inc()
        log.warning("transaction aborted; the batch will be read again", error=str(exc))
        if fatal:
            raise PipelineRestart(str(exc)) from None
        try:
            await asyncio.to_thread(producer.abort_transaction, ABORT_TIMEOUT_S)
        except KafkaException as again:  # the transaction cannot even be aborted: start over
            raise PipelineRestart(str(again)) from None
        await self._seek_firsts(sources)
        if not (isinstance(error, KafkaError) and error.code() in _REBALANCING):  # not a fault: go on at once
            await asyncio.sleep(ABORT_BACKOFF_S)
        return False

    async def _seek_firsts(self, sources: list[Source]) -> None:
        """Position each partition of a batch at its first record, to read it again; parked records
        from there on are forgotten, since they will be read again too."""
        consumer = self._consumer
        assert consumer is not None
        firsts: dict[tuple[str, int], int] = {}
        for src in sources:
            where = (src.topic, src.partition)
            firsts[where] = min(firsts.get(where, src.offset), src.offset)
        for (topic, partition), first in firsts.items():
            if (topic, partition) in self._owned:
                with contextlib.suppress(KafkaException):
                    await consumer.seek(TopicPartition(topic, partition, first))
                self._parking.drop_from((topic, partition), first)
                self._consumed[(topic, partition)] = first

    @staticmethod
    def _produce(producer: Producer, topic: str, key: bytes | None, value: bytes | None) -> None:
        while True:
            try:
                producer.produce(topic, value, key)
            except BufferError:  # the local queue is full: let librdkafka send some first
                producer.poll(0.05)
            else:
                return

    @property
    def _call_timeout_s(self) -> float:
        """A transaction call that has not returned by then fails (retriable) and the batch is aborted."""
        return self.settings.transaction_timeout_ms / 1000 + 5

    def _committed(self, out: BatchOutcome, records: int, seconds: float) -> None:
        """Apply our own writes to the state view at once, then count."""
        self._progress = time.monotonic()
        self.state.routed.put_many_local(out.routed, out.encoded)
        for key, value in out.consents.items():
            self.state.consents.put_local(key, value)
        for key, value in out.case_groups.items():
            self.state.casegroups.put_local(key, value)
        m = self.metrics
        m.commits.labels("committed").inc()
        m.txn_seconds.observe(seconds)
        m.records.inc(records)
        counts: dict[tuple[str, str], int] = defaultdict(int)
        for message_type, outcome, reason in out.decisions:
            counts[(message_type, outcome)] += 1
            if reason is not None and outcome != "DELIVER":
                m.denials.labels(reason).inc()
        for (message_type, outcome), n in counts.items():
            m.routed.labels(message_type, outcome).inc(n)
        for code in out.dead_letters:
            m.dead_letters.labels(code).inc()
        now_ms = time.time() * 1000
        for created in out.created_ms:
            m.latency.observe(max(0.0, (now_ms - created) / 1000))


async def run(settings: RouterSettings, shutdown: ShutdownSignal) -> None:
    router = Router(settings)
    async with contextlib.AsyncExitStack() as stack:
        metrics = MetricsServer(router.registry, host=settings.metrics_host, port=settings.metrics_port)
        await stack.enter_async_context(metrics)
        await router.start()
        stack.push_async_callback(router.stop)
        log.info("router running", metrics=metrics.url, transactional_id=router.transactional_id)
        await router.run(shutdown)
