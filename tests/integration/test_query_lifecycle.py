"""The router's half of the query lifecycle: deadlines stamped, state kept, hits notified."""

from __future__ import annotations

import json
from typing import Any

from liaison.query_record import query_record
from liaison.sdk import envelope, query, reply
from tests.bus_harness import Bus, running_bus

HOUR_MS = 3_600_000


async def _query_state(bus: Bus, query_id: str, count: int) -> dict[str, Any]:
    """The query's record assembled from the first `count` records of bus.queries (its keys)."""
    records = await bus.read_raw(bus.topics.queries, count)
    view = {r.key.decode(): json.loads(r.value) for r in records if r.key and r.value}
    state = query_record(view.get, query_id)
    assert isinstance(state, dict), f"no bus.queries record for {query_id}"
    return state


async def test_urgent_query_gets_its_legal_deadline_and_closes_on_the_final_reply(
        kafka_bootstrap: str) -> None:
    """An urgent query on directly accessible data is due in 8 hours; the answer closes it."""
    async with running_bus(kafka_bootstrap) as bus:
        q = query(envelope("IT-PS", to=["ES-CNP"], priority="URGENT", case_id="URG-1"),
                  "Where is the suspect?", accessibility="DIRECT",
                  urgency_ground="THREAT_TO_LIFE_OR_SAFETY", deadline=None)
        q["deadline"] = q["envelope"]["created_at"] + 30 * 24 * HOUR_MS  # asks for more than the law
        await bus.send("Query", q)
        delivered = (await bus.read(bus.topics.inbox("Query", "ES-CNP"), 1))[0][1]
        stamped = delivered["deadline"]
        assert 0 < stamped - q["envelope"]["created_at"] <= 8 * HOUR_MS + 60_000

        qid = q["envelope"]["message_id"]
        state = await _query_state(bus, qid, 1)
        assert state["state"] == "OPEN"
        assert state["requested"] == ["ES-CNP"]
        assert state["deadline"] == stamped

        await bus.send("Reply", reply(envelope("ES-CNP", correlation_id=qid, case_id="URG-1"),
                                      "HIT", information="Calle Mayor 12"))
        await bus.read(bus.topics.inbox("Reply", "IT-PS"), 1)
        closed = await _query_state(bus, qid, 2)
        assert closed["state"] == "ANSWERED"
        assert closed["answers"]["ES-CNP"]["outcome"] == "HIT"
        assert closed["closed_at"] == closed["answers"]["ES-CNP"]["at"]


async def test_hit_notification_reaches_the_owner_of_the_record(kafka_bootstrap: str) -> None:
    """When a reply reports a HIT on a record owned by a third agency, that owner is told."""
    async with running_bus(kafka_bootstrap) as bus:
        q = query(envelope("FR-PN", to=["EU-EUROPOL"], case_id="HIT-1"), "Plate known?",
                  kind="HIT_CHECK", criteria={"plate": "AB-123-CD"})
        await bus.send("Query", q)
        await bus.read(bus.topics.inbox("Query", "EU-EUROPOL"), 1)
        r = reply(envelope("EU-EUROPOL", correlation_id=q["envelope"]["message_id"], case_id="HIT-1"),
                  "HIT", reference="EPE-77", data_owner="NL-KLPD")
        await bus.send("Reply", r)
        notes = [rec for _, rec in await bus.read(bus.topics.receipts("NL-KLPD"), 1)]
        assert [(n["kind"], n["reference"], n["recipient"]) for n in notes] == [
            ("HIT_NOTIFICATION", "EPE-77", "FR-PN")]


async def test_personal_data_in_a_hit_check_reply_is_denied(kafka_bootstrap: str) -> None:
    """Prüm step one: a HIT_CHECK is answered with HIT and a reference only."""
    async with running_bus(kafka_bootstrap) as bus:
        q = query(envelope("DE-BKA", to=["NL-KLPD"], case_id="PRUM-1"), "DNA profile known?",
                  kind="HIT_CHECK")
        await bus.send("Query", q)
        await bus.read(bus.topics.inbox("Query", "NL-KLPD"), 1)
        r = reply(envelope("NL-KLPD", correlation_id=q["envelope"]["message_id"], case_id="PRUM-1"),
                  "HIT", reference="NL-DNA-9", information="Jan Jansen, born 1980")
        await bus.send("Reply", r)
        receipts = [rec for _, rec in await bus.read(bus.topics.receipts("NL-KLPD"), 1)]
        assert receipts[0]["kind"] == "DENIED"
        assert receipts[0]["reason_code"] == "PERSONAL_DATA_IN_HIT_CHECK"
        assert await bus.read(bus.topics.inbox("Reply", "DE-BKA"), 1, timeout_s=2) == []
