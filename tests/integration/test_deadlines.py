"""The deadlines service on a real broker, driven by a manual clock: no real waiting for deadlines.

Queries and answers are written to `bus.queries` the way the router writes them (a base record
and one key per answer); the receipts are read back read_committed, with a settle time after the
expected count so that a duplicate would show.
"""

from __future__ import annotations

import asyncio
import gc
import urllib.request
import uuid
from typing import Any

from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from liaison.core.runner import ShutdownSignal
from liaison.table import json_bytes
from services.deadlines.app import DeadlineService, DeadlinesFenced, run
from tests.bus_harness import running_bus
from tests.deadlines_harness import (
    HOUR,
    HOUR_S,
    T0,
    T0_S,
    ManualClock,
    assembled,
    deadlines,
    kinds,
    latest_record,
    query_base,
    receipts,
    settings_for,
    until,
    write_answer,
    write_query,
)
from tests.kafka_helpers import read_until


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
                await until(lambda: any(e["event"] == "deadlines running" for e in logs) or task.done(),
                             30, lambda: str(logs))
                url = next(e["metrics"] for e in logs if e["event"] == "deadlines running")
                await write_query(bus, record)
                assert kinds(await receipts(bus, "FR-PN", 1, settle_s=0), qid) == [("OVERDUE", "DE-BKA")]
                await until(lambda: metric("liaison_deadlines_overdue_queries") == 1, 15, str)

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


async def test_keys_of_a_forgotten_query_are_deleted_and_it_fires_no_more(kafka_bootstrap: str) -> None:
    """A query past its expiry (set by the router from the policy) loses every key, base, answers and
    timers, to tombstones; its pending timers never fire. A query not expired keeps its keys."""
    async with running_bus(kafka_bootstrap, router=False) as bus:
        clock = ManualClock(T0_S)
        old, kept = str(uuid.uuid4()), str(uuid.uuid4())
        await write_query(bus, query_base(old, requested=["DE-BKA", "NL-KLPD"], deadline_h=8, x=T0 - 1))
        await bus.send_raw(bus.topics.queries, json_bytes({"outcome": "NO_HIT", "at": T0 - 2, "x": T0 - 1}),
                           key=f"{old}/answer/NL-KLPD".encode())  # as the router writes it
        await write_query(bus, query_base(kept, requested=["DE-BKA"], deadline_h=8, x=T0 + 1000 * HOUR))
        async with deadlines(bus, clock, state_sweep_interval_s=0.2) as running:
            await until(lambda: old not in running.service.table.items, 30, lambda: "not deleted")
            keys = {(r.key, r.value) for r in await read_until(
                kafka_bootstrap, bus.topics.queries, count=6, timeout_s=10)}
            assert {k for k, v in keys if v is None} == {old.encode(), f"{old}/answer/NL-KLPD".encode()}
            assert kept in running.service.table.items
            clock.set(T0_S + 9 * HOUR_S)  # both deadlines pass: only the kept query is overdue
            fr = await receipts(bus, "FR-PN", 1)
            assert [(r["envelope"]["correlation_id"], r["kind"]) for r in fr] == [(kept, "OVERDUE")]
