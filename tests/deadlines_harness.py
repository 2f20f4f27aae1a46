"""The deadlines service under test: a manual clock, an in-process instance, and the query keys
written the way the router writes them (a base record, one key per answer)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer
from prometheus_client import CollectorRegistry

from liaison.core.runner import ShutdownSignal
from liaison.query_record import query_record
from liaison.table import json_bytes, json_value
from services.deadlines.app import DeadlineService
from services.deadlines.settings import DeadlinesSettings
from services.router.state import answered_query
from tests.bus_harness import Bus

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
        await until(lambda: any(round(t * 1000) == when_ms for t in self.sleepers), timeout_s,
                     lambda: f"sleepers {self.sleepers}, wanted {when_ms / 1000}")


async def until(condition: Callable[[], bool], timeout_s: float, describe: Callable[[], str]) -> None:
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

        await until(holds, 15, lambda: f"{query_id}: {query_record(items.get, query_id)}")

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
async def deadlines(bus: Bus, clock: ManualClock, **overrides: Any) -> AsyncIterator[Running]:
    service = DeadlineService(settings_for(bus, **overrides), clock=clock, registry=CollectorRegistry())
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
        await until(lambda: bool(consumer.assignment()), 15, lambda: "no partitions assigned")
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


