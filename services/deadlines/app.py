"""The deadlines service: follow `bus.queries`, fire each query's timers, commit notices and timers together.

The timers are not stored anywhere else: they are recomputed from the compacted `bus.queries`
topic (read to its end at start) and the clock. Each query there is several keys (see
`liaison.query_record`): the router writes the query and each answer, this service only the
query's timers key (`reminded`, `overdue`, `closed_notified`). Each firing is one Kafka transaction
holding the receipts and the timers key with the fired timers recorded, so a timer is sent exactly
once, also across restarts; as nobody else writes that key, no other write can hide a fired timer.

The service has no input partitions to fence on, so it uses one transactional id: starting an
instance fences the previous one (its next transaction fails and it stops). One instance is active
at a time; run a second one only as a standby that takes over by starting.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
import uuid
from collections.abc import Iterable
from typing import Any, NamedTuple, Protocol

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, ProducerFenced
from prometheus_client import CollectorRegistry

from liaison.batching import BatchSender, Record
from liaison.codec import Codec
from liaison.contract import ready_codec
from liaison.core.lifecycle import AsyncResource
from liaison.core.metrics import MetricsServer
from liaison.core.runner import ShutdownSignal
from liaison.errors import BrokerUnavailable, ConfigError, LiaisonError
from liaison.kafka_admin import ensure_topics
from liaison.query_record import open_mark, query_id_of, query_record, timers_key
from liaison.registry_client import RegistryClient
from liaison.store import StateDir
from liaison.table import CompactedTable, json_bytes
from services.deadlines.lifecycle import (
    PRIORITIES,
    Event,
    MalformedQuery,
    Notice,
    QueryState,
    has_timer,
    mark_fired,
    new_final_answers,
    notices,
    plan,
)
from services.deadlines.metrics import DeadlinesMetrics, OpenQueries, priority_label
from services.deadlines.settings import DeadlinesSettings

log = structlog.get_logger(__name__)

BUS_ORIGINATOR = "BUS.DEADLINES"
SWEEP_BATCH = 10_000  # expired keys deleted in one transaction


class Clock(Protocol):
    """Wall-clock time in seconds since the epoch, and a way to wait for an instant of it."""

    def now(self) -> float: ...

    async def wait_until(self, when: float) -> None:
        """Return once `now() >= when`; may be cancelled."""


class SystemClock:
    """time.time(), waited for in naps of at most a minute so that clock steps are noticed."""

    max_nap_s = 60.0

    def now(self) -> float:
        return time.time()

    async def wait_until(self, when: float) -> None:
        while (left := when - time.time()) > 0:  # noqa: ASYNC110  # waiting for a time, not an event
            await asyncio.sleep(min(left, self.max_nap_s))


class Firing(NamedTuple):
    """One query's share of a transaction: its events due and the value of its timers key after them."""

    query: QueryState
    events: tuple[Event, ...]
    timers: dict[str, Any]


class DeadlinesFenced(LiaisonError):
    """Another instance started with the same transactional id; this one must stop."""


class DeadlineService(AsyncResource):
    """Timers of every open query, rebuilt from `bus.queries`, fired in transactions."""

    def __init__(self, settings: DeadlinesSettings, *, clock: Clock | None = None,
                 registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = DeadlinesMetrics(self.registry)
        self.table = CompactedTable(settings, settings.topics.queries, on_change=self._changed)
        self._state_dir: StateDir | None = None
        self._next_sweep = time.monotonic() + settings.state_sweep_interval_s
        self._open = OpenQueries(self.metrics)
        self._registry_client = RegistryClient.from_settings(settings)
        self._codec: Codec | None = None
        self._producer: AIOKafkaProducer | None = None
        self._sender: BatchSender | None = None
        # Queries that still need a timer (OPEN, or closed and the requester not told yet).
        self._views: dict[str, QueryState] = {}
        # Timers keys this instance committed whose echo the table has not read back yet: until it
        # does, the table may still show an older value of the key (read-your-writes).
        self._unechoed: dict[str, dict[str, Any]] = {}
        # Final answers already observed in the reply-time histogram, per tracked query.
        self._answered: dict[str, frozenset[str]] = {}
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._schedule: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []
        self._known_topics: set[str] = set()
        self._live = False
        self._started = False

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Fence any previous instance, then read `bus.queries` to its end; safe to call twice."""
        if self._started:
            return
        self._started = True
        try:
            await ensure_topics(self.settings, [spec for spec in self.settings.topics.bus_topics()
                                                if spec.name == self.settings.topics.queries])
            self._codec = await ready_codec(self._registry_client)
            # InitProducerId first: it aborts a previous instance's open transaction and fences it,
            # so the table read next holds every timer that instance will ever have committed.
            self._producer = AIOKafkaProducer(
                **self.settings.kafka_kwargs(), transactional_id=self.settings.transactional_id,
                enable_idempotence=True, acks="all", linger_ms=5)
            await self._producer.start()
            self._sender = BatchSender(self._producer)
            self._state_dir = StateDir.claim(self.settings.state_dir, "deadlines", self.settings.instance_id)
            self.table = CompactedTable(self.settings, self.settings.topics.queries, on_change=self._changed,
                                        store=self._state_dir.store("queries"), mark=open_mark)
            await self.table.start(timeout_s=self.settings.startup_timeout_s)
            for query_id in self.table.items.marked():  # restored from a checkpoint: no change was read
                self._track(query_id, self._record(query_id))
                self._dirty.add(query_id)
            self._open.publish()
        except KafkaError as exc:
            await self.stop()
            raise BrokerUnavailable(
                f"Kafka at {self.settings.bootstrap_servers} is unreachable: {exc}") from None
        except BaseException:
            await self.stop()
            raise
        self._live = True
        log.info("deadlines started", timers=len(self._views),
                 transactional_id=self.settings.transactional_id)

    async def stop(self) -> None:
        """Stop the producer (no transaction is open once run() returned), then the table."""
        if not self._started:
            return
        self._started = False
        self._live = False
        if self._producer is not None:
            with contextlib.suppress(KafkaError):
                await self._producer.stop()
            self._producer = None
            self._sender = None
        await self.table.stop()
        if self._state_dir is not None:
            self._state_dir.release()
            self._state_dir = None
        await self._registry_client.close()


    # -- the view -------------------------------------------------------------------------------
    def _stored(self, key: str) -> Any:
        """The one read of the table: the value of one key as read from the topic so far."""
        return self.table.items.get(key)

    def _lookup(self, key: str) -> Any:
        """The value of one key, this instance's own newest write first."""
        mine = self._unechoed.get(key)
        return mine if mine is not None else self._stored(key)

    def _record(self, query_id: str) -> Any:
        """The query's record assembled from its keys, None while its base is not there."""
        return query_record(self._lookup, query_id)

    def _changed(self, changes: dict[str, Any]) -> None:
        """Called by the table for every batch of changed keys; replans the queries they belong to."""
        for key, value in changes.items():
            if key in self._unechoed and value == self._unechoed[key]:
                del self._unechoed[key]  # our write is read back: the table is as new as we are
        touched = {query_id_of(key) for key in changes}
        for query_id in touched:
            self._track(query_id, self._record(query_id))
        self._dirty |= touched
        self._open.publish()
        self._wake.set()

    def _track(self, query_id: str, record: Any) -> None:
        if record is None:
            self._forget(query_id)
            self._open.update(query_id, None)
            return
        try:
            query = QueryState.of(query_id, record)
        except MalformedQuery as exc:
            log.warning("query record skipped", query_id=query_id, error=str(exc))
            self.metrics.malformed.inc()
            self._forget(query_id)
            self._open.update(query_id, None)
            return
        self._open.update(query_id, query)
        seen = self._answered.get(query_id, frozenset())
        if self._live and not query.closed_notified:
            histogram = self.metrics.time_to_reply.labels(priority_label(query.priority))
            for _, millis in new_final_answers(query, seen):
                histogram.observe(millis / 1000)
        if has_timer(query):
            self._views[query_id] = query
            self._answered[query_id] = seen | query.final_answers
        else:
            self._forget(query_id)

    def _forget(self, query_id: str) -> None:
        self._views.pop(query_id, None)
        self._answered.pop(query_id, None)
        self._schedule.pop(query_id, None)

    def view(self, query_id: str) -> QueryState | None:
        """The query as this instance sees it, while it still has a timer."""
        return self._views.get(query_id)

    # -- the loop -------------------------------------------------------------------------------
    def now_ms(self) -> int:
        return round(self.clock.now() * 1000)

    async def run(self, shutdown: ShutdownSignal) -> None:
        """Fire what is due, then sleep until the next timer, a changed record or shutdown.

        A transaction under way is finished before shutdown is looked at again.
        """
        if self._producer is None:
            raise RuntimeError("start() the service before run()")
        while not shutdown.is_set:
            if time.monotonic() >= self._next_sweep:
                await self._sweep(shutdown)
            due = self._collect_due()
            if due:
                await self._fire(due, shutdown)
                continue
            await self._sleep(self._next_timer(), shutdown)

    async def _sweep(self, shutdown: ShutdownSignal) -> None:
        """Delete the keys of queries the bus forgot (expired), in a transaction of their own."""
        self._next_sweep = time.monotonic() + self.settings.state_sweep_interval_s
        expired = self.table.items.expired(self.now_ms(), SWEEP_BATCH)
        if not expired:
            return
        topic = self.settings.topics.queries
        if not await self._commit([(topic, key.encode(), None) for key in expired]):
            await self._pause(shutdown)
            return
        for key in expired:
            self.table.put_local(key, None)
        log.info("expired query keys deleted", keys=len(expired))
        if len(expired) == SWEEP_BATCH:
            self._next_sweep = time.monotonic()  # more are due

    def _collect_due(self) -> list[str]:
        """Replan changed queries and those whose timer came; return the ones with events due."""
        now = self.now_ms()
        candidates, self._dirty = self._dirty, set()
        self._wake.clear()
        while self._heap and self._heap[0][0] <= now:
            at, query_id = heapq.heappop(self._heap)
            if self._schedule.get(query_id) == at:
                del self._schedule[query_id]
                candidates.add(query_id)
        due = []
        for query_id in candidates:
            query = self._views.get(query_id)
            if query is None:
                self._schedule.pop(query_id, None)
                continue
            timers = plan(query, now, self.settings.reminder_share)
            if timers.due:
                due.append(query_id)
            else:
                self._set_timer(query_id, timers.next_at)
        return due

    def _set_timer(self, query_id: str, at: int | None) -> None:
        if at is None:
            self._schedule.pop(query_id, None)
            return
        if self._schedule.get(query_id) == at:
            return
        self._schedule[query_id] = at
        heapq.heappush(self._heap, (at, query_id))
        if len(self._heap) > 2 * len(self._schedule) + 1000:  # drop superseded entries
            self._heap = [(t, q) for q, t in self._schedule.items()]
            heapq.heapify(self._heap)

    def _next_timer(self) -> int | None:
        while self._heap and self._schedule.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    async def _sleep(self, until_ms: int | None, shutdown: ShutdownSignal) -> None:
        if self._dirty:
            return
        waits = [asyncio.create_task(self._wake.wait()), asyncio.create_task(shutdown.wait())]
        if until_ms is not None:
            waits.append(asyncio.create_task(self.clock.wait_until(until_ms / 1000)))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED,
                               timeout=max(0.0, self._next_sweep - time.monotonic()))
        finally:
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def _pause(self, shutdown: ShutdownSignal) -> None:
        """Back off after a fault, unless shutdown comes first (real time: faults are not timers)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(shutdown.wait(), self.settings.retry_backoff_s)

    def _retry_later(self, query_ids: Iterable[str]) -> None:
        self._dirty.update(query_ids)
        self._wake.set()

    # -- firing ---------------------------------------------------------------------------------
    async def _fire(self, due: list[str], shutdown: ShutdownSignal) -> None:
        """Send the notices of up to `batch_max_queries` queries and record them, in one transaction."""
        batch, rest = due[:self.settings.batch_max_queries], due[self.settings.batch_max_queries:]
        self._retry_later(rest)
        # Decide on everything committed so far: an answer the router just recorded ends that
        # agency's timers, the last one closes the query.
        if not await self.table.wait_caught_up(timeout_s=self.settings.catch_up_timeout_s):
            log.warning("bus.queries could not be read up to date; timers wait", queries=len(batch))
            self._retry_later(batch)
            await self._pause(shutdown)
            return
        now = self.now_ms()
        firing: list[Firing] = []
        for query_id in batch:
            query = self._views.get(query_id)
            if query is None:
                continue
            timers = plan(query, now, self.settings.reminder_share)
            if timers.due:
                expires = (self._stored(query_id) or {}).get("x")  # forgotten with the query
                firing.append(Firing(query, timers.due, {**mark_fired(query, timers.due), "x": expires}))
            else:
                self._set_timer(query_id, timers.next_at)
        if not firing:
            return
        try:
            outgoing = await self._records(firing, now)
        except KafkaError as exc:
            log.error("could not read topic metadata; timers wait", error=str(exc))  # noqa: TRY400  # a known fault, named
            self._retry_later(f.query.query_id for f in firing)
            await self._pause(shutdown)
            return
        if not await self._commit(outgoing):
            self._retry_later(f.query.query_id for f in firing)
            await self._pause(shutdown)
            return
        self._committed(firing)

    async def _records(self, firing: list[Firing], now: int) -> list[Record]:
        """The receipts and the timers keys of one transaction."""
        assert self._codec is not None
        topics = self.settings.topics
        wanted = {topics.receipts(n.to) for f in firing for e in f.events for n in notices(f.query, e)}
        await self._refresh_topics(wanted)
        outgoing: list[Record] = []
        for query, events, timers in firing:
            key = (query.case_id or query.query_id).encode()
            for event in events:
                for notice in notices(query, event):
                    topic = topics.receipts(notice.to)
                    if topic not in self._known_topics:
                        log.error("no receipts topic for the agency; notice dropped", topic=topic,
                                  query_id=query.query_id, case_id=query.case_id, kind=notice.kind)
                        self.metrics.undeliverable.inc()
                        continue
                    outgoing.append((topic, key, self._receipt(query, notice, now)))
            outgoing.append((topics.queries, timers_key(query.query_id).encode(), json_bytes(timers)))
        return outgoing

    async def _refresh_topics(self, wanted: set[str]) -> None:
        if wanted <= self._known_topics:
            return
        assert self._producer is not None
        cluster = await self._producer.client.fetch_all_metadata()
        self._known_topics = set(cluster.topics())

    def _receipt(self, query: QueryState, notice: Notice, now: int) -> bytes:
        assert self._codec is not None
        return self._codec.encode("Receipt", {
            "envelope": {
                "message_id": str(uuid.uuid4()), "correlation_id": query.query_id,
                "case_id": query.case_id, "originator": BUS_ORIGINATOR,
                "addressing": {"agencies": [notice.to]}, "created_at": now,
                "priority": query.priority if query.priority in PRIORITIES else "NORMAL",
                "tlp": "AMBER_STRICT",
            },
            "kind": notice.kind, "message_type": "Query", "recipient": notice.recipient,
            "reason_code": notice.reason_code, "reason": notice.reason, "deadline": query.deadline,
            "reference": None,
        })

    async def _commit(self, outgoing: list[Record]) -> bool:
        """One transaction; False when it was aborted (nothing was written), fenced raises."""
        assert self._producer is not None
        assert self._sender is not None
        futures: list[asyncio.Future[object]] = []
        try:
            async with self._producer.transaction():
                futures = await self._sender.send(outgoing)
            await asyncio.gather(*futures)
        except ProducerFenced:
            _retrieve(futures)
            self.metrics.transactions.labels("fenced").inc()
            raise DeadlinesFenced(
                f"another deadlines instance uses transactional id {self.settings.transactional_id} "
                "now; this one stops") from None
        except KafkaError as exc:
            _retrieve(futures)
            log.error("transaction aborted; the timers fire again", error=str(exc))  # noqa: TRY400  # a known fault, named
            self.metrics.transactions.labels("aborted").inc()
            return False
        self.metrics.transactions.labels("committed").inc()
        return True

    def _committed(self, firing: list[Firing]) -> None:
        """Count and log, then apply our timers to the view at once (the table echoes them later)."""
        counters = {"REMINDER": self.metrics.reminders, "OVERDUE": self.metrics.overdue,
                    "CLOSED": self.metrics.closed}
        messages = {"REMINDER": "reminder sent", "OVERDUE": "overdue notices sent",
                    "CLOSED": "closing notice sent"}
        for query, events, timers in firing:
            bound = log.bind(query_id=query.query_id, case_id=query.case_id)
            for event in events:
                counters[event.kind].inc()
                bound.info(messages[event.kind], agency=event.agency, requester=query.requester,
                           deadline=query.deadline, due_at=event.due_at)
            key = timers_key(query.query_id)
            if self._stored(key) != timers:  # not read back yet (it may already be)
                self._unechoed[key] = timers
            self._track(query.query_id, self._record(query.query_id))
            self._retry_later([query.query_id])
        self._open.publish()


def _retrieve(futures: list[asyncio.Future[object]]) -> None:
    """Take the failures of an aborted transaction's sends, which the exception already reported."""

    def take(future: asyncio.Future[object]) -> None:
        if not future.cancelled():
            future.exception()

    for future in futures:
        if future.done():
            take(future)
        else:
            future.add_done_callback(take)


async def run(settings: DeadlinesSettings, shutdown: ShutdownSignal, *, clock: Clock | None = None,
              registry: CollectorRegistry | None = None) -> None:
    """Serve until SIGINT/SIGTERM: metrics endpoint once the timers are rebuilt, then fire them."""
    service = DeadlineService(settings, clock=clock, registry=registry)
    async with contextlib.AsyncExitStack() as stack:
        starting = asyncio.create_task(service.start())
        stack.push_async_callback(service.stop)
        stopping = asyncio.create_task(shutdown.wait())
        try:
            await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not starting.done():
                starting.cancel()
            results = await asyncio.gather(starting, stopping, return_exceptions=True)
        if isinstance(results[0], BaseException) and not isinstance(results[0], asyncio.CancelledError):
            raise results[0]
        if shutdown.is_set:
            return
        try:
            metrics = await stack.enter_async_context(
                MetricsServer(service.registry, host=settings.metrics_host, port=settings.metrics_port))
        except OSError as exc:
            raise ConfigError(f"metrics endpoint cannot listen on {settings.metrics_host}:"
                              f"{settings.metrics_port}: {exc.strerror or exc}") from None
        log.info("deadlines running", metrics=metrics.url, reminder_share=settings.reminder_share)
        await service.run(shutdown)


__all__ = ["Clock", "DeadlineService", "DeadlinesFenced", "SystemClock", "run"]
