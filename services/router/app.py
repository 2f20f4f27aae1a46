"""The router service: pattern-subscribed consumer, one transactional producer per input partition.

aiokafka implements the transaction protocol before KIP-447 (no fencing by consumer group), so
zombies are fenced the classic way: the transactional id is derived from the input partition
(`<prefix>.<topic>.<partition>`). Whoever owns a partition initialises that id first, which
aborts a stalled previous owner's open transaction and fences its producer; only then does it
read the committed offset and resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError, ProducerFenced
from prometheus_client import CollectorRegistry

from liaison.batching import BatchSender
from liaison.codec import UnknownSchemaId
from liaison.contract import learn_unknown, ready_codec
from liaison.core.metrics import MetricsServer
from liaison.core.runner import ShutdownSignal
from liaison.directory_feed import DirectoryFeed
from liaison.errors import DecodeError
from liaison.kafka_admin import ensure_topics
from liaison.policy import load_policy
from liaison.registry_client import RegistryClient
from liaison.table import json_bytes
from liaison.topics import FAMILIES
from services.router.metrics import RouterMetrics
from services.router.pipeline import BatchOutcome, Pipeline, Source
from services.router.settings import RouterSettings
from services.router.state import RouterState

log = structlog.get_logger(__name__)

LAG_INTERVAL_S = 5.0  # how often the consumer-lag gauge is measured


class Router:
    """Consume outboxes, route in batches, commit each partition's batch in one transaction."""

    def __init__(self, settings: RouterSettings, *, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry or CollectorRegistry()
        self.metrics = RouterMetrics(self.registry)
        self.state = RouterState(settings, routed_topic=settings.topics.routed,
                                 consents_topic=settings.topics.consents,
                                 queries_topic=settings.topics.queries)
        self.directory = DirectoryFeed(settings)
        self._registry_client = RegistryClient.from_settings(settings)
        self._consumer: AIOKafkaConsumer | None = None
        self._producers: dict[TopicPartition, AIOKafkaProducer] = {}
        self._senders: dict[TopicPartition, BatchSender] = {}
        self._inflight: dict[TopicPartition, asyncio.Task[None]] = {}
        self._fatal: Exception | None = None
        self._pending: dict[TopicPartition, list[Any]] = {}
        self._settled = asyncio.Event()  # set once every assigned partition has its producer
        # Next offset to route per owned partition: records below it are already committed, e.g.
        # a batch fetched before a rebalance and fetched again after the seek to the committed offset.
        self._next: dict[TopicPartition, int] = {}
        self._lock = asyncio.Lock()
        self._pipeline: Pipeline | None = None
        self._started = False
        self.lag_interval_s = LAG_INTERVAL_S
        self._lag_task: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._started:
            return
        self._started = True
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
        self._pipeline = Pipeline(codec, engine, self.state, self.settings.topics)
        self._consumer = AIOKafkaConsumer(
            **self.settings.kafka_kwargs(), group_id=self.settings.group_id,
            enable_auto_commit=False, auto_offset_reset="earliest", isolation_level="read_committed",
            metadata_max_age_ms=self.settings.metadata_max_age_ms,
            fetch_max_wait_ms=self.settings.fetch_max_wait_ms,
            session_timeout_ms=self.settings.session_timeout_ms,
            heartbeat_interval_ms=max(1000, self.settings.session_timeout_ms // 5),
            max_poll_records=self.settings.batch_max_records,
        )
        await self._consumer.start()
        self._consumer.subscribe(pattern=self.settings.topics.outbox_pattern, listener=_Rebalance(self))
        self._lag_task = asyncio.create_task(self._measure_lag(self._consumer))

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        lag_task, self._lag_task = self._lag_task, None
        if lag_task is not None:
            lag_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lag_task
        # run() has returned, so no transaction is open. Leaving the group revokes our
        # partitions (their producers stop in _revoked); then stop whatever is left.
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        async with self._lock:
            for producer in self._producers.values():
                await producer.stop()
            self._producers.clear()
            self._senders.clear()
        await self.state.stop()
        await self.directory.stop()
        await self._registry_client.close()

    # -- partitions -----------------------------------------------------------------------------
    async def _assigned(self, partitions: set[TopicPartition]) -> None:
        self._settled.clear()
        async with self._lock:
            for tp in sorted(partitions):
                if tp in self._producers:
                    continue
                producer = AIOKafkaProducer(
                    **self.settings.kafka_kwargs(), enable_idempotence=True, acks="all",
                    transactional_id=f"{self.settings.transactional_prefix}.{tp.topic}.{tp.partition}",
                    linger_ms=5, max_batch_size=256 * 1024, retry_backoff_ms=10,
                )
                await producer.start()  # InitProducerId: fences and aborts a previous owner
                self._producers[tp] = producer
                self._senders[tp] = BatchSender(producer)
                assert self._consumer is not None
                committed = await self._consumer.committed(tp)
                if committed is not None:
                    self._consumer.seek(tp, committed)
                self._next[tp] = committed or 0
            self.metrics.partitions.set(len(self._producers))
            log.info("partitions assigned", count=len(partitions))
        self._settled.set()

    async def _revoked(self, partitions: set[TopicPartition]) -> None:
        self._settled.clear()
        async with self._lock:
            for tp in partitions:
                task = self._inflight.get(tp)
                if task is not None:  # let its transaction finish before giving the partition up
                    await asyncio.wait([task])
                self._next.pop(tp, None)
                self._pending.pop(tp, None)
                self._senders.pop(tp, None)
                producer = self._producers.pop(tp, None)
                if producer is not None:
                    await producer.stop()
            self.metrics.partitions.set(len(self._producers))

    # -- consumer lag ---------------------------------------------------------------------------
    async def _measure_lag(self, consumer: AIOKafkaConsumer) -> None:
        """Every few seconds, per topic family: records in owned outbox partitions not routed yet.

        The end is the last stable offset (we read committed); the progress is the committed
        offset while a batch is in flight, else the fetch position (which also steps over
        transaction markers). Nothing is measured during a rebalance, when fetched records may
        belong to no batch yet.
        """
        while True:
            if self._settled.is_set():
                await self._measure_lag_once(consumer)
            await asyncio.sleep(self.lag_interval_s)

    async def _measure_lag_once(self, consumer: AIOKafkaConsumer) -> None:
        lag = dict.fromkeys(FAMILIES.values(), 0)
        try:
            async with asyncio.timeout(self.lag_interval_s + 5):
                owned = [tp for tp in consumer.assignment() if tp in self._next]
                ends = await consumer.end_offsets(owned) if owned else {}
                for tp, end in ends.items():
                    parsed = self.settings.topics.parse_outbox(tp.topic)
                    position = await consumer.position(tp)  # may yield: check "busy" after it
                    busy = tp in self._inflight or tp in self._pending
                    done = self._next.get(tp) if busy else position
                    if parsed is not None and done is not None:
                        lag[FAMILIES[parsed[0]]] += max(0, end - done)
        except (KafkaError, TimeoutError) as exc:  # a rebalance or a slow broker: measure again later
            log.debug("consumer lag not measured", error=str(exc) or type(exc).__name__)
            return
        if self._settled.is_set():
            for family, records in lag.items():
                self.metrics.lag.labels(family).set(records)

    # -- the loop -------------------------------------------------------------------------------
    async def run(self, shutdown: ShutdownSignal) -> None:
        """Fetch, and hand each partition's batch to its own task, so that one partition's
        transaction commit never holds up the others. A busy partition is paused until its
        batch is committed; records stay in order within a partition."""
        consumer = self._consumer
        assert consumer is not None
        try:
            while not shutdown.is_set:
                if self._fatal is not None:
                    raise self._fatal
                batches = await consumer.getmany(timeout_ms=self.settings.batch_timeout_ms,
                                                 max_records=self.settings.batch_max_records)
                while batches and not self._settled.is_set() and not shutdown.is_set:
                    # A rebalance is under way: wait until every partition is fenced and positioned.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._settled.wait(), 1.0)
                owned = consumer.assignment()
                for tp, records in batches.items():
                    if tp not in self._producers or tp not in owned:
                        continue  # revoked meanwhile; the new owner reads from the committed offset
                    if tp in self._inflight:  # fetched before the pause took effect: queue behind it
                        self._pending.setdefault(tp, []).extend(records)
                        continue
                    consumer.pause(tp)
                    self._inflight[tp] = asyncio.create_task(self._run_batch(tp, records))
        finally:
            if self._inflight:
                await asyncio.wait(list(self._inflight.values()))

    async def _run_batch(self, tp: TopicPartition, records: list[Any]) -> None:
        try:
            while records:
                await self._process(tp, records)
                records = self._pending.pop(tp, [])
        except Exception as exc:
            log.exception("routing failed; the router stops", topic=tp.topic, partition=tp.partition)
            self._fatal = exc
        finally:
            self._inflight.pop(tp, None)
            if tp in self._producers and self._consumer is not None:
                self._consumer.resume(tp)

    async def _process(self, tp: TopicPartition, records: list[Any]) -> None:
        assert self._pipeline is not None
        assert self._consumer is not None
        first_new = self._next.get(tp, 0)
        if records[0].offset < first_new:
            records = [r for r in records if r.offset >= first_new]
            if not records:
                return
        out = BatchOutcome()
        for rec in records:
            await self._route_one(Source.of(rec), out)
        producer = self._producers[tp]
        started = time.monotonic()
        try:
            async with producer.transaction():
                names = self.settings.topics
                outgoing = [(o.topic, o.key, o.value) for o in out.outputs]
                for topic, updates in ((names.routed, out.routed), (names.consents, out.consents),
                                       (names.queries, out.queries)):
                    outgoing += [(topic, k.encode(), json_bytes(v)) for k, v in updates.items()]
                futures = await self._senders[tp].send(outgoing)
                await producer.send_offsets_to_transaction(
                    {tp: records[-1].offset + 1}, self.settings.group_id)
            await asyncio.gather(*futures)
        except ProducerFenced:
            log.warning("fenced: another router owns this partition now", topic=tp.topic,
                        partition=tp.partition)
            self.metrics.commits.labels("fenced").inc()
            await self._drop(tp)
            return
        except KafkaError as exc:
            log.error("transaction aborted; the batch will be read again", error=str(exc),  # noqa: TRY400  # a known fault, named

                      topic=tp.topic, partition=tp.partition)
            self.metrics.commits.labels("aborted").inc()
            self._pending.pop(tp, None)  # read again from the batch's first offset
            self._consumer.seek(tp, records[0].offset)
            await asyncio.sleep(0.5)
            return
        self._next[tp] = records[-1].offset + 1
        self._committed(out, records, time.monotonic() - started)

    async def _drop(self, tp: TopicPartition) -> None:
        self._next.pop(tp, None)
        self._senders.pop(tp, None)
        producer = self._producers.pop(tp, None)
        if producer is not None:
            with contextlib.suppress(KafkaError):
                await producer.stop()
        self.metrics.partitions.set(len(self._producers))

    def _committed(self, out: BatchOutcome, records: list[Any], seconds: float) -> None:
        """Apply our own writes to the state view at once, then count."""
        for key, value in out.routed.items():
            self.state.routed.put_local(key, value)
        for key, value in out.consents.items():
            self.state.consents.put_local(key, value)
        for key, value in out.queries.items():
            self.state.queries.put_local(key, value)
        m = self.metrics
        m.commits.labels("committed").inc()
        m.txn_seconds.observe(seconds)
        m.records.inc(len(records))
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

    async def _route_one(self, src: Source, out: BatchOutcome) -> None:
        assert self._pipeline is not None
        pipeline = self._pipeline
        try:
            try:
                message_type, record = pipeline.decode(src)
            except UnknownSchemaId as exc:
                if not await learn_unknown(pipeline.codec, self._registry_client, exc.schema_id):
                    raise
                message_type, record = pipeline.decode(src)
        except DecodeError as exc:
            pipeline.dead_letter(src, exc.code, str(exc), out)
            return
        if pipeline.unknown_references(record):
            self.metrics.catch_ups.inc()
            await self._catch_up_on(record)
        pipeline.route(src, message_type, record, out)

    async def _catch_up_on(self, record: dict[str, Any]) -> None:
        """Another instance may have committed the cited message a moment ago. Its transaction's
        markers reach each partition separately, so the state topic can lag the inbox the replier
        read it from by a few milliseconds: read up to date, and again, until it shows or time is up."""
        assert self._pipeline is not None
        deadline = time.monotonic() + self.settings.catch_up_timeout_s
        while True:
            await self.state.catch_up(max(0.1, deadline - time.monotonic()))
            if not self._pipeline.unknown_references(record) or time.monotonic() >= deadline:
                return
            await asyncio.sleep(0.05)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, router: Router) -> None:
        self.router = router

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.router._revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.router._assigned(assigned)


async def run(settings: RouterSettings, shutdown: ShutdownSignal) -> None:
    router = Router(settings)
    async with contextlib.AsyncExitStack() as stack:
        metrics = MetricsServer(router.registry, host=settings.metrics_host, port=settings.metrics_port)
        await stack.enter_async_context(metrics)
        await router.start()
        stack.push_async_callback(router.stop)
        log.info("router running", metrics=metrics.url)
        await router.run(shutdown)
