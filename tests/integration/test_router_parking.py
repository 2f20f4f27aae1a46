"""No stalls: a record citing a message not seen yet waits aside, and the records behind it go on."""

from __future__ import annotations

import collections
import uuid
from pathlib import Path

from liaison.sdk import envelope, query, reply
from tests.bus_harness import Bus, running_bus
from tests.services_harness import start_router_process


def _ask(asker: str, answerer: str, case: str, *, message_id: str | None = None) -> dict:
    q = query(envelope(asker, to=[answerer], case_id=case), "Known to you?")
    if message_id is not None:
        q["envelope"]["message_id"] = message_id
    return q


def _answer(answerer: str, q: dict, outcome: str = "NO_HIT") -> dict:
    env = q["envelope"]
    return reply(envelope(answerer, correlation_id=env["message_id"], case_id=env["case_id"]), outcome)


async def _replies_to(bus: Bus, asker: str, count: int, **kw: float) -> list[str]:
    delivered = await bus.read(bus.topics.inbox("Reply", asker), count, **kw)
    return [r["envelope"]["message_id"] for _, r in delivered]


async def test_a_reply_waiting_for_its_query_does_not_hold_up_the_replies_behind_it(
        kafka_bootstrap: str) -> None:
    """DE-BKA's first reply cites a query the bus has not routed yet: it waits aside while the
    second one, behind it in the same partition, is delivered; once the query is routed, the
    waiting reply is delivered too (not refused as an answer to nothing)."""
    async with running_bus(kafka_bootstrap, router=False) as bus:
        await bus.start_router(unknown_ref_wait_s=120.0)
        known = _ask("NL-KLPD", "DE-BKA", "P-KNOWN")
        await bus.send("Query", known)
        await bus.read(bus.topics.inbox("Query", "DE-BKA"), 1)

        later = _ask("FR-PN", "DE-BKA", "P-LATER", message_id=str(uuid.uuid4()))
        early_answer = _answer("DE-BKA", later)  # the answer reaches the bus before the query
        await bus.send("Reply", early_answer)
        behind = _answer("DE-BKA", known)
        await bus.send("Reply", behind)
        assert await _replies_to(bus, "NL-KLPD", 1) == [behind["envelope"]["message_id"]]
        assert await _replies_to(bus, "FR-PN", 1, timeout_s=1.0) == []  # still waiting
        assert bus.routers[0][0].metrics.parked._value.get() == 1

        await bus.send("Query", later)
        assert await _replies_to(bus, "FR-PN", 1) == [early_answer["envelope"]["message_id"]]


async def test_replies_to_made_up_ids_wait_once_and_delay_nobody(kafka_bootstrap: str) -> None:
    """A flood of replies citing ids nobody routed: the reply behind them is delivered before any of
    them is refused; after one wait, the refusals come, and a new citation of the same made-up id
    is refused without waiting again (the negative cache)."""
    async with running_bus(kafka_bootstrap, router=False) as bus:
        router = await bus.start_router(unknown_ref_wait_s=3.0, unknown_ref_ttl_s=600.0)
        known = _ask("NL-KLPD", "DE-BKA", "F-KNOWN")
        await bus.send("Query", known)
        await bus.read(bus.topics.inbox("Query", "DE-BKA"), 1)
        made_up = [str(uuid.uuid4()) for _ in range(50)]
        for ref in made_up:
            await bus.send("Reply", reply(envelope("DE-BKA", correlation_id=ref, case_id="F"), "NO_HIT"))
        await bus.send("Reply", _answer("DE-BKA", known))
        await _replies_to(bus, "NL-KLPD", 1)
        receipts = [r for _, r in await bus.read(bus.topics.receipts("DE-BKA"), 1)]
        assert [r["kind"] for r in receipts] == ["DELIVERED"], "a made-up citation was decided first"

        refused = [r for _, r in await bus.read(bus.topics.receipts("DE-BKA"), 51, timeout_s=60)]
        assert collections.Counter(r["reason_code"] for r in refused if r["kind"] == "REJECTED") == {
            "UNKNOWN_CORRELATION": 50}
        parked_before = router.metrics.parked_total._value.get()
        await bus.send("Reply", reply(envelope("DE-BKA", correlation_id=made_up[0], case_id="F"), "NO_HIT"))
        await bus.read(bus.topics.receipts("DE-BKA"), 52, timeout_s=30)
        assert router.metrics.parked_total._value.get() == parked_before  # decided without a wait


async def test_a_crash_while_a_record_waits_loses_and_doubles_nothing(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    """The committed offset stays at the waiting record, so a router killed meanwhile loses nothing;
    the records behind it, already routed, are recognised when read again and not sent twice."""
    async with running_bus(kafka_bootstrap, router=False) as bus:
        known = [_ask("NL-KLPD", "DE-BKA", f"C-{i}") for i in range(5)]
        later = _ask("FR-PN", "DE-BKA", "C-LATER", message_id=str(uuid.uuid4()))
        first = start_router_process(bus, tmp_path, "router-1", LIAISON_UNKNOWN_REF_WAIT_S="300")
        try:
            for q in known:
                await bus.send("Query", q)
            await bus.read(bus.topics.inbox("Query", "DE-BKA"), len(known))
            await bus.send("Reply", _answer("DE-BKA", later))  # waits: its query is not routed yet
            behind = [_answer("DE-BKA", q) for q in known]
            for r in behind:
                await bus.send("Reply", r)
            await _replies_to(bus, "NL-KLPD", len(behind))
            first.kill()
        finally:
            first.stop()
        second = start_router_process(bus, tmp_path, "router-2", LIAISON_UNKNOWN_REF_WAIT_S="300")
        try:
            await bus.send("Query", later)
            assert len(await _replies_to(bus, "FR-PN", 1)) == 1
            seen = await _replies_to(bus, "NL-KLPD", len(behind) + 1, timeout_s=10, settle_s=3.0)
            receipts = [r for _, r in await bus.read(bus.topics.receipts("DE-BKA"), 100, timeout_s=5,
                                                      settle_s=1.0)]
        finally:
            second.stop()
        assert sorted(seen) == sorted(r["envelope"]["message_id"] for r in behind)
        about = collections.Counter((r["kind"], r["envelope"]["correlation_id"]) for r in receipts)
        assert set(about.values()) == {1}, f"a receipt was sent twice: {about}"
        assert len(about) == len(behind) + 1
        assert "Traceback" not in second.log_text()
