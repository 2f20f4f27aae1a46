"""The schema workers: real worker processes, parsing off the event loop, killed past the time limit."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from liaison.errors import SchemaError
from services.registry.compat import CompatibilityLevel, parse_schema
from services.registry.worker import ParserBusy, ParseTimeout, SchemaWorkers

V1 = json.dumps({"type": "record", "name": "A", "fields": [{"name": "x", "type": "int"}]})
V2 = json.dumps({"type": "record", "name": "A", "fields": [{"name": "x", "type": "int"},
                                                          {"name": "y", "type": "int"}]})


def quadratic_schema(fields: int = 20_000) -> str:
    """A record the Avro parser needs seconds for: it checks field names against a list."""
    return json.dumps({"type": "record", "name": "Slow",
                       "fields": [{"name": f"f{i}", "type": "int"} for i in range(fields)]})


async def until(condition: object, timeout_s: float = 30.0) -> None:
    """Wait for `condition()` to hold, or fail at the deadline."""
    assert callable(condition)
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_parse_and_check_give_what_the_library_gives_in_process() -> None:
    """Results come back as the in-process functions would return them."""
    async with SchemaWorkers(timeout_s=30) as workers:
        parsed = await workers.parse(V1)
        assert parsed.canonical == parse_schema(V1).canonical
        assert parsed.text == parse_schema(V1).text
        result = await workers.check(CompatibilityLevel.BACKWARD, parse_schema(V2), {1: parsed})
        assert not result.compatible
        assert "/fields/1" in result.messages[0]
        assert (await workers.check(CompatibilityLevel.FORWARD, parse_schema(V2), {1: parsed})).compatible
        with pytest.raises(SchemaError, match="not JSON"):
            await workers.parse("{nope")
        with pytest.raises(SchemaError):
            await workers.parse('{"type": "record", "name": "A"}')


async def test_a_job_past_the_time_limit_is_refused_and_its_worker_replaced() -> None:
    """The slow parse is stopped at the limit; the next job gets a fresh worker that works."""
    async with SchemaWorkers(timeout_s=0.3) as workers:
        await workers.parse(V1)  # the worker is up: the limit now counts parsing only
        with pytest.raises(ParseTimeout, match=r"longer than 0\.3 s"):
            await workers.parse(quadratic_schema())
        assert workers.running == 0
        assert (await workers.parse(V2)).canonical == parse_schema(V2).canonical


async def test_the_event_loop_runs_while_a_worker_parses() -> None:
    """While a slow parse runs, the loop keeps turning: many short sleeps complete."""
    async with SchemaWorkers(timeout_s=0.5) as workers:
        await workers.parse(V1)
        slow = asyncio.create_task(workers.parse(quadratic_schema()))
        await until(lambda: workers.running == 1)
        turns = 0
        while not slow.done():
            await asyncio.sleep(0.01)
            turns += 1
        with pytest.raises(ParseTimeout):
            await slow
        assert turns >= 10


async def test_jobs_past_max_pending_are_refused_at_once() -> None:
    """One worker, two jobs at most: a third is refused with a retry delay, not queued."""
    async with SchemaWorkers(workers=1, timeout_s=1.0, max_pending=2) as workers:
        await workers.parse(V1)
        first = asyncio.create_task(workers.parse(quadratic_schema()))
        await until(lambda: workers.running == 1)
        second = asyncio.create_task(workers.parse(V2))
        await until(lambda: workers.pending == 2)
        with pytest.raises(ParserBusy) as busy:
            await workers.parse(V1)
        assert busy.value.retry_after_s == 1.0
        with pytest.raises(ParseTimeout):
            await first
        # The waiting job got the replaced worker once the slow one was stopped.
        assert (await second).canonical == parse_schema(V2).canonical


async def test_stop_kills_the_workers_and_start_brings_them_back() -> None:
    workers = SchemaWorkers(timeout_s=30)
    await workers.start()
    await workers.parse(V1)
    await workers.stop()
    await workers.stop()
    await workers.start()
    assert (await workers.parse(V2)).canonical == parse_schema(V2).canonical
    await workers.stop()
