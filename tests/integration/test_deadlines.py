"""The deadlines service on a real broker, driven by a manual clock: no real waiting for deadlines.

Queries and answers are written to `bus.queries` the way the router writes them (a base record
and one key per answer); the receipts are read back read_committed, with a settle time after the
expected count so that a duplicate would show.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from liaison.core.runner import ShutdownSignal
from liaison.query_record import query_record
from liaison.table import json_bytes, json_value
from services.deadlines.app import DeadlineService, DeadlinesFenced, run
from services.deadlines.settings import DeadlinesSettings
from services.router.state import answered_query
from tests.bus_harness import Bus, running_bus

HOUR_S = 3600.0
T0_S = 1_795_870_000.0  # the manual clock's start, seconds since the epoch
T0 = int(T0_S * 1000)
HOUR = 3_600_000
SETTLE_S = 1.5


class ManualClock:
    """A clock that moves only when a test advances it; `advance` wakes whoever waits on it."""

    def __init__(self, start_s: float) -> None:
        self._now = start_s
        self._tick = asyncio.Event()
        self.sleepers: list[float] = []  # instants someone waits for right now

    def now(self) -> float:
        return self._now

    async def wait_until(self, when: float) -> None:
        self.sleepers.append(when)
        try:
            while self._now < when:
                tick = self._tick
                await tick.wait()
        finally:
            self.sleepers.remove(when)

    def set(self, now_s: float) -> None:
        assert now_s >= self._now, "time never goes back"
        self._now = now_s
        self._tick.set()
        self._tick = asyncio.Event()

    async def sleeping_until(self, when_ms: int, *, timeout_s: float = 15.0) -> None:
        """Wait until the service sleeps until `when_ms`: it planned that timer and nothing is due."""
        await _until(lambda: any(round(t * 1000) == when_ms for t in self.sleepers), timeout_s,
                     lambda: f"sleepers {self.sleepers}, wanted {when_ms / 1000}")


async def _until(condition: Callable[[], bool], timeout_s: float, describe: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s: {describe()}")
        await asyncio.sleep(0.01)


class Running:
    """One service instance under test, with its own metrics registry."""

    def __init__(self, service: DeadlineService, task: asyncio.Task[None], shutdown: ShutdownSignal) -> None:
        self.service, self.task, self.shutdown = service, task, shutdown

    def metric(self, name: str, **labels: str) -> float:
        value = self.service.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    async def seen(self, query_id: str, check: Callable[[dict[str, Any]], bool] = lambda _: True) -> None:
        """Wait until the service's table holds the query and `check` holds on its assembled record."""
        items = self.service.table.items

        def holds() -> bool:
            record = query_record(items.get, query_id)
            return record is not None and check(record)

        await _until(holds, 15, lambda: f"{query_id}: {query_record(items.get, query_id)}")

    async def stop(self) -> None:
        self.shutdown.trigger("test")
        await asyncio.wait_for(self.task, 30)
        await self.service.stop()


def settings_for(bus: Bus, **overrides: Any) -> DeadlinesSettings:
    base = bus.settings.model_dump()
    base.update({"transactional_id": f"{bus.settings.topic_prefix}deadlines", "metrics_port": 0,
                 "retry_backoff_s": 0.2})
    base.update(overrides)
    return DeadlinesSettings(**base)


@contextlib.asynccontextmanager
async def deadlines(bus: Bus, clock: ManualClock) -> AsyncIterator[Running]:
    service = DeadlineService(settings_for(bus), clock=clock, registry=CollectorRegistry())
    await service.start()
    shutdown = ShutdownSignal()
    running = Running(service, asyncio.create_task(service.run(shutdown)), shutdown)
    try:
        yield running
    finally:
        if not running.task.done():
            await running.stop()
        else:
            await service.stop()


def query_base(query_id: str, *, requested: list[str], deadline_h: float, requester: str = "FR-PN",
               created: int = T0, priority: str = "URGENT", **changes: Any) -> dict[str, Any]:
    """The base record the router writes when it delivers a query."""
    record: dict[str, Any] = {
        "query_id": query_id, "requester": requester, "requested": requested, "kind": "INFORMATION",
        "priority": priority, "case_id": f"CASE-{query_id[:8]}", "created_at": created,
        "deadline": created + int(deadline_h * HOUR),
    }
    record.update(changes)
    return record


def assembled(base: dict[str, Any], *, answers: dict[str, dict[str, Any]] | None = None,
              reminded: list[str] | None = None, overdue: list[str] | None = None,
              state: str = "OPEN", closed_at: int | None = None, closed_notified: bool = False,
              ) -> dict[str, Any]:
    """The record readers get from the query's keys."""
    return {**base, "answers": answers or {}, "reminded": reminded or [], "overdue": overdue or [],
            "state": state, "closed_at": closed_at, "closed_notified": closed_notified}


async def write_query(bus: Bus, record: dict[str, Any]) -> None:
    """The query's base record (or a record in the single-record shape of older buses)."""
    await bus.send_raw(bus.topics.queries, json_bytes(record), key=record["query_id"].encode())


async def write_answer(bus: Bus, query_id: str, agency: str, outcome: str, at: int) -> None:
    """An answer as the router records it when it delivers the reply: under its own key."""
    key, value = answered_query(query_id, agency, outcome, at)
    await bus.send_raw(bus.topics.queries, json_bytes(value), key=key.encode())


async def receipts(bus: Bus, agency: str, count: int, *, settle_s: float = SETTLE_S,
                   timeout_s: float = 15.0) -> list[dict[str, Any]]:
    """Every receipt to `agency`, read once `count` arrived and a settle time passed."""
    return [r for name, r in await bus.read(bus.topics.receipts(agency), count, timeout_s=timeout_s,
                                            settle_s=settle_s) if name == "Receipt"]


def kinds(found: list[dict[str, Any]], query_id: str) -> list[tuple[str, str | None]]:
    return sorted((r["kind"], r["recipient"]) for r in found if r["envelope"]["correlation_id"] == query_id)


async def latest_record(bus: Bus, query_id: str) -> dict[str, Any]:
    """The query's record as a new reader assembles it from everything committed up to now."""
    consumer = AIOKafkaConsumer(bus.topics.queries, bootstrap_servers=bus.settings.bootstrap_servers,
                                group_id=None, isolation_level="read_committed",
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        await _until(lambda: bool(consumer.assignment()), 15, lambda: "no partitions assigned")
        ends = await consumer.end_offsets(list(consumer.assignment()))
        view: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + 15
        while any([await consumer.position(tp) < end for tp, end in ends.items()]):
            assert time.monotonic() < deadline, "bus.queries not read to its end in time"
            for records in (await consumer.getmany(timeout_ms=200)).values():
                view.update({r.key.decode(): json_value(r.value) for r in records if r.key and r.value})
        record = query_record(view.get, query_id)
        assert isinstance(record, dict), f"no record of query {query_id} in {view}"
        return record
    finally:
        await consumer.stop()


async def test_reminder_and_overdue_fire_once_each_at_their_time(kafka_bootstrap: str) -> None:
    """6 h into an 8 h deadline the late agencies are reminded; at 8 h both sides hear it is overdue."""
    async with running_bus(kafka_bootstrap, router=False) as bus:
        clock = ManualClock(T0_S)
        qid = str(uuid.uuid4())
        record = query_base(qid, requested=["DE-BKA", "NL-KLPD", "ES-CNP"], deadline_h=8)
        answers: dict[str, dict[str, Any]] = {"NL-KLPD": {"outcome": "PARTIAL", "at": T0 + HOUR},
                                              "ES-CNP": {"outcome": "NO_HIT", "at": T0 + 2 * HOUR}}
        async with deadlines(bus, clock) as svc:
            await write_query(bus, record)
            for agency, answer in answers.items():
                await write_answer(bus, qid, agency, answer["outcome"], answer["at"])
            await clock.sleeping_until(T0 + 6 * HOUR)
            clock.set(T0_S + 6 * HOUR_S - 1)  # a second early: still asleep until the reminder
            await clock.sleeping_until(T0 + 6 * HOUR)
            assert svc.metric("liaison_deadlines_reminders_total") == 0

            clock.set(T0_S + 6 * HOUR_S)
            de = await receipts(bus, "DE-BKA", 1, settle_s=0)
            assert kinds(de, qid) == [("REMINDER", "FR-PN")]
            reminder = de[0]
            assert reminder["envelope"]["originator"] == "BUS.DEADLINES"
            assert reminder["envelope"]["case_id"] == record["case_id"]
            assert reminder["envelope"]["created_at"] == T0 + 6 * HOUR
            assert reminder["envelope"]["addressing"]["agencies"] == ["DE-BKA"]
            assert reminder["deadline"] == record["deadline"]
            assert reminder["message_type"] == "Query"
            assert kinds(await receipts(bus, "NL-KLPD", 1, settle_s=0), qid) == [("REMINDER", "FR-PN")]

            await clock.sleeping_until(T0 + 8 * HOUR)
            clock.set(T0_S + 8 * HOUR_S)
            fr = await receipts(bus, "FR-PN", 2)
            assert kinds(fr, qid) == [("OVERDUE", "DE-BKA"), ("OVERDUE", "NL-KLPD")]
            assert all(r["envelope"]["created_at"] == T0 + 8 * HOUR for r in fr)
            assert kinds(await receipts(bus, "DE-BKA", 2), qid) == [
                ("OVERDUE", "DE-BKA"), ("REMINDER", "FR-PN")]
            assert kinds(await receipts(bus, "NL-KLPD", 2), qid) == [
                ("OVERDUE", "NL-KLPD"), ("REMINDER", "FR-PN")]
            assert await receipts(bus, "ES-CNP", 1, timeout_s=1) == []  # its final answer ended its timers

            assert await latest_record(bus, qid) == assembled(
                record, answers=answers, reminded=["DE-BKA", "NL-KLPD"], overdue=["DE-BKA", "NL-KLPD"])
            assert svc.metric("liaison_deadlines_reminders_total") == 2
            assert svc.metric("liaison_deadlines_overdue_total") == 2
            assert svc.metric("liaison_deadlines_open_queries", priority="URGENT") == 1
            assert svc.metric("liaison_deadlines_overdue_queries") == 1


async def test_an_answer_recorded_after_a_reminder_keeps_both_and_ends_that_agencys_timers(
        kafka_bootstrap: str) -> None:
    """The router's answer key and the service's timers key never overwrite each other: the
    reminder is not sent again, and the agency that answered gets no overdue notice."""
    async with running_bus(kafka_bootstrap, router=False) as bus:
        clock = ManualClock(T0_S + 7 * HOUR_S)  # past the reminder: it fires at start
        qid = str(uuid.uuid4())
        record = query_base(qid, requested=["DE-BKA", "NL-KLPD"], deadline_h=8)
        async with deadlines(bus, clock) as svc:
            await write_query(bus, record)
            assert len(await receipts(bus, "DE-BKA", 1, settle_s=0)) == 1
            await svc.seen(qid, lambda r: r["reminded"] == ["DE-BKA", "NL-KLPD"])
            await write_answer(bus, qid, "NL-KLPD", "HIT", T0 + 7 * HOUR)
            await svc.seen(qid, lambda r: "NL-KLPD" in r["answers"])
            await clock.sleeping_until(T0 + 8 * HOUR)
            clock.set(T0_S + 8 * HOUR_S)
            assert kinds(await receipts(bus, "FR-PN", 1), qid) == [("OVERDUE", "DE-BKA")]
            assert kinds(await receipts(bus, "DE-BKA", 2), qid) == [
                ("OVERDUE", "DE-BKA"), ("REMINDER", "FR-PN")]
            assert kinds(await receipts(bus, "NL-KLPD", 1), qid) == [("REMINDER", "FR-PN")]
            assert await latest_record(bus, qid) == assembled(
                record, answers={"NL-KLPD": {"outcome": "HIT", "at": T0 + 7 * HOUR}},
                reminded=["DE-BKA", "NL-KLPD"], overdue=["DE-BKA"])


async def test_a_record_in_the_single_record_shape_keeps_its_timers_and_closes_once(
        kafka_bootstrap: str) -> None:
    """A query recorded before the keys were split: its answers and fired timers count, and an
    answer recorded the new way closes it."""
    async with running_bus(kafka_bootstrap, router=False) as bus:
        clock = ManualClock(T0_S + 9 * HOUR_S)
        qid = str(uuid.uuid4())
        legacy = {**query_base(qid, requested=["DE-BKA", "NL-KLPD", "ES-CNP"], deadline_h=8),
                  "state": "OPEN", "closed_at": None, "reminded": ["DE-BKA", "ES-CNP"],
                  "overdue": ["ES-CNP"], "answers": {"NL-KLPD": {"outcome": "NO_HIT", "at": T0 + HOUR}}}
        await write_query(bus, legacy)
        async with deadlines(bus, clock) as svc:
            assert kinds(await receipts(bus, "FR-PN", 1), qid) == [("OVERDUE", "DE-BKA")]
            await svc.seen(qid, lambda r: r["overdue"] == ["ES-CNP", "DE-BKA"])
            await write_answer(bus, qid, "DE-BKA", "HIT", T0 + 9 * HOUR)
            await write_answer(bus, qid, "ES-CNP", "REFUSED", T0 + 10 * HOUR)
            fr = await receipts(bus, "FR-PN", 2)
            assert kinds(fr, qid) == [("CLOSED", None), ("OVERDUE", "DE-BKA")]
            assert kinds(await receipts(bus, "NL-KLPD", 1, timeout_s=1), qid) == []
            assert svc.metric("liaison_deadlines_reminders_total") == 0
            record = await latest_record(bus, qid)
            assert (record["state"], record["closed_at"], record["closed_notified"]) == (
                "ANSWERED", T0 + 10 * HOUR, True)
            assert record["overdue"] == ["ES-CNP", "DE-BKA"]
            assert sorted(record["answers"]) == ["DE-BKA", "ES-CNP", "NL-KLPD"]


async def test_restarts_fire_nothing_twice_and_catch_up_on_missed_timers(kafka_bootstrap: str) -> None:
    """Timers fired before a restart stay fired; those that came while the service was down fire once."""
    async with running_bus(kafka_bootstrap, router=False) as bus:
        clock = ManualClock(T0_S)
        a, b, c = (str(uuid.uuid4()) for _ in range(3))
        for qid, hours in ((a, 8), (b, 4), (c, 5)):  # reminders at 6 h, 3 h, 3.75 h
            await write_query(bus, query_base(qid, requested=["DE-BKA"], deadline_h=hours))

        async with deadlines(bus, clock) as first:
            await clock.sleeping_until(T0 + 3 * HOUR)
            clock.set(T0_S + 3 * HOUR_S)
            assert kinds(await receipts(bus, "DE-BKA", 1, settle_s=0), b) == [("REMINDER", "FR-PN")]
            await clock.sleeping_until(T0 + int(3.75 * HOUR))
            await first.stop()

        clock.set(T0_S + 7 * HOUR_S)  # while down: a's reminder, b's and c's deadlines pass
        async with deadlines(bus, clock) as second:
            fr = await receipts(bus, "FR-PN", 2)
            assert sorted((r["envelope"]["correlation_id"], r["kind"]) for r in fr) == sorted(
                [(b, "OVERDUE"), (c, "OVERDUE")])
            assert all(r["envelope"]["created_at"] == T0 + 7 * HOUR for r in fr)
            de = await receipts(bus, "DE-BKA", 4)
            assert kinds(de, a) == [("REMINDER", "FR-PN")]
            assert kinds(de, b) == [("OVERDUE", "DE-BKA"), ("REMINDER", "FR-PN")]
            assert kinds(de, c) == [("OVERDUE", "DE-BKA")]  # its reminder came too late to send
            await clock.sleeping_until(T0 + 8 * HOUR)
            clock.set(T0_S + 8 * HOUR_S)
            assert kinds(await receipts(bus, "FR-PN", 3), a) == [("OVERDUE", "DE-BKA")]
            assert second.metric("liaison_deadlines_reminders_total") == 1
            assert second.metric("liaison_deadlines_overdue_total") == 3

        clock.set(T0_S + 9 * HOUR_S)
        async with deadlines(bus, clock) as third:
            for qid in (a, b, c):
                await third.seen(qid)
            assert len(await receipts(bus, "DE-BKA", 5)) == 5
            assert len(await receipts(bus, "FR-PN", 3)) == 3
            assert third.metric("liaison_deadlines_reminders_total") == 0
            assert third.metric("liaison_deadlines_overdue_total") == 0
            assert third.metric("liaison_deadlines_overdue_queries") == 3
            assert third.metric("liaison_deadlines_transactions_total", result="committed") == 0


async def test_a_late_answer_closes_an_overdue_query_with_one_notice(kafka_bootstrap: str) -> None:
    """The router records the late final answer; the requester is told once that the query is closed.

    This test runs the service as `python -m services.deadlines` does: `app.run` until shutdown.
    """
    async with running_bus(kafka_bootstrap, router=False) as bus:
        clock = ManualClock(T0_S + 10 * HOUR_S)
        registry = CollectorRegistry()
        shutdown = ShutdownSignal()

        def metric(name: str, **labels: str) -> float:
            return registry.get_sample_value(name, labels) or 0.0

        qid = str(uuid.uuid4())
        record = query_base(qid, requested=["DE-BKA"], deadline_h=8, priority="HIGH")
        with capture_logs() as logs:
            task = asyncio.create_task(run(settings_for(bus), shutdown, clock=clock, registry=registry))
            try:
                await _until(lambda: any(e["event"] == "deadlines running" for e in logs) or task.done(),
                             30, lambda: str(logs))
                url = next(e["metrics"] for e in logs if e["event"] == "deadlines running")
                await write_query(bus, record)
                assert kinds(await receipts(bus, "FR-PN", 1, settle_s=0), qid) == [("OVERDUE", "DE-BKA")]
                await _until(lambda: metric("liaison_deadlines_overdue_queries") == 1, 15, str)

                clock.set(T0_S + 11 * HOUR_S)
                await write_answer(bus, qid, "DE-BKA", "HIT", T0 + 11 * HOUR)
                fr = await receipts(bus, "FR-PN", 2)
                assert kinds(fr, qid) == [("CLOSED", None), ("OVERDUE", "DE-BKA")]
                notice = next(r for r in fr if r["kind"] == "CLOSED")
                assert notice["reason_code"] == "ANSWERED"
                assert "DE-BKA HIT" in notice["reason"]
                assert await latest_record(bus, qid) == assembled(
                    record, answers={"DE-BKA": {"outcome": "HIT", "at": T0 + 11 * HOUR}}, overdue=["DE-BKA"],
                    state="ANSWERED", closed_at=T0 + 11 * HOUR, closed_notified=True)
                assert kinds(await receipts(bus, "DE-BKA", 1), qid) == [("OVERDUE", "DE-BKA")]

                exposed = await asyncio.to_thread(_scrape, url)
                assert "liaison_deadlines_closed_total 1.0" in exposed
                assert 'liaison_deadlines_time_to_reply_seconds_count{priority="HIGH"} 1.0' in exposed
                assert ('liaison_deadlines_time_to_reply_seconds_sum{priority="HIGH"} '
                        f"{11 * HOUR_S}") in exposed
                assert 'liaison_deadlines_open_queries{priority="HIGH"} 0.0' in exposed
                assert "liaison_deadlines_overdue_queries 0.0" in exposed
            finally:
                shutdown.trigger("test")
                await asyncio.wait_for(task, 30)
        fired = [e for e in logs if e["event"] in {"overdue notices sent", "closing notice sent"}]
        assert [(e["event"], e["query_id"], e["case_id"]) for e in fired] == [
            ("overdue notices sent", qid, record["case_id"]), ("closing notice sent", qid, record["case_id"])]


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310  # the service's loopback endpoint
        return str(response.read().decode())


async def test_a_second_instance_fences_the_first(kafka_bootstrap: str) -> None:
    """One instance is active: starting another fences the first, whose next firing stops it."""
    async with running_bus(kafka_bootstrap, router=False) as bus:
        clock = ManualClock(T0_S)
        qid = str(uuid.uuid4())
        await write_query(bus, query_base(qid, requested=["DE-BKA"], deadline_h=8))
        async with deadlines(bus, clock) as old:
            await clock.sleeping_until(T0 + 6 * HOUR)
            standby = DeadlineService(settings_for(bus), clock=clock, registry=CollectorRegistry())
            await standby.start()  # fences `old`, which notices at its next transaction
            try:
                clock.set(T0_S + 6 * HOUR_S)
                await asyncio.wait([old.task], timeout=15)
                assert old.task.done()
                assert isinstance(old.task.exception(), DeadlinesFenced)
                assert old.metric("liaison_deadlines_transactions_total", result="fenced") == 1
                assert await receipts(bus, "DE-BKA", 1, timeout_s=1) == []  # its transaction was aborted

                shutdown = ShutdownSignal()
                task = asyncio.create_task(standby.run(shutdown))
                assert kinds(await receipts(bus, "DE-BKA", 1), qid) == [("REMINDER", "FR-PN")]
                shutdown.trigger("test")
                await asyncio.wait_for(task, 15)
            finally:
                await standby.stop()
    # A fenced aiokafka producer leaves futures holding the error that nobody retrieves; collect them
    # now, as asyncio's report of them formats a traceback, which on CPython < 3.11.8 breaks an
    # ast.parse under way elsewhere (gh-106905), e.g. pytest's.
    del old
    gc.collect()
