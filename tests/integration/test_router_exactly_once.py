"""Exactly once through crashes and takeovers: every inbox holds each message once (read_committed)."""

from __future__ import annotations

import collections
from pathlib import Path

from liaison.sdk import alert, envelope
from tests.bus_harness import Bus, running_bus
from tests.services_harness import start_router_process

SENDERS = ("FR-PN", "NL-KLPD", "ES-CNP")


async def _publish(bus: Bus, count: int, tag: str) -> set[str]:
    ids = set()
    for i in range(count):
        msg = alert(envelope(SENDERS[i % len(SENDERS)], to=["DE-BKA"], case_id=f"{tag}-{i}"))
        ids.add(msg["envelope"]["message_id"])
        await bus.send("Alert", msg)
    return ids


async def _inbox_ids(bus: Bus, count: int, *, timeout_s: float, settle_s: float = 0.0) -> list[str]:
    return [r["envelope"]["message_id"] for _, r in await bus.read(
        bus.topics.inbox("Alert", "DE-BKA"), count, timeout_s=timeout_s, settle_s=settle_s)]


def _assert_exactly_once(expected: set[str], seen: list[str]) -> None:
    counts = collections.Counter(seen)
    duplicates = {mid: n for mid, n in counts.items() if n > 1}
    assert duplicates == {}
    assert set(counts) == expected


async def test_sigkill_mid_stream_then_restart_delivers_each_message_once(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    """A router killed with SIGKILL in the middle of 5,000 messages loses and doubles nothing."""
    async with running_bus(kafka_bootstrap, router=False) as bus:
        expected = await _publish(bus, 5000, "crash")
        first = start_router_process(bus, tmp_path, "router-1", LIAISON_BATCH_MAX_RECORDS="100")
        try:
            await _inbox_ids(bus, 800, timeout_s=120)
            first.kill()
        finally:
            first.stop()
        at_crash = await _inbox_ids(bus, len(expected), timeout_s=1)
        assert len(at_crash) < len(expected), "the router finished before it was killed"
        second = start_router_process(bus, tmp_path, "router-2", LIAISON_BATCH_MAX_RECORDS="100")
        try:
            seen = await _inbox_ids(bus, len(expected), timeout_s=180, settle_s=2.0)
        finally:
            second.stop()
        assert "Traceback" not in second.log_text()
        _assert_exactly_once(expected, seen)


async def test_takeover_from_a_stalled_router_fences_it(kafka_bootstrap: str, tmp_path: Path) -> None:
    """A stalled router's partitions move to another instance; when it wakes, it is fenced."""
    async with running_bus(kafka_bootstrap, router=False) as bus:
        expected = await _publish(bus, 3000, "stall")
        stalled = start_router_process(bus, tmp_path, "router-a", LIAISON_BATCH_MAX_RECORDS="100")
        taker = None
        try:
            await _inbox_ids(bus, 500, timeout_s=120)
            stalled.pause()
            expected |= await _publish(bus, 1000, "more")
            taker = start_router_process(bus, tmp_path, "router-b", LIAISON_BATCH_MAX_RECORDS="100")
            seen = await _inbox_ids(bus, len(expected), timeout_s=180)
            stalled.resume()  # wakes up believing it still owns its partitions
            seen = await _inbox_ids(bus, len(expected), timeout_s=60, settle_s=8.0)
        finally:
            stalled.stop()
            if taker is not None:
                taker.stop()
        _assert_exactly_once(expected, seen)
