"""`liaison case | trace | deadletter` through the entry point, against a real bus."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from liaison.sdk import AgencyClient, envelope, query, reply
from tests.bus_harness import Bus
from tests.integration.test_cli_common import CLOSED_PORT, cli, cli_env, module_bus
from tests.kafka_helpers import eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")
bus = module_bus()


async def _routed(bus: Bus, sender: str, message_type: str, record: dict[str, Any]) -> list[dict[str, Any]]:
    """Send and wait for the router's receipts: its audit records are committed with them."""
    async with AgencyClient(bus.settings, sender, codec=bus.codec) as client:
        receipts = await client.send_and_track(message_type, record, timeout_s=30)
    assert receipts, "the router wrote no receipt"
    return receipts


async def _dead_letters_keyed(bus: Bus, key: bytes, count: int = 1) -> list[dict[str, Any]]:
    """Wait until `count` dead letters with this key exist (read directly, not through the CLI)."""
    async def probe() -> list[dict[str, Any]]:
        letters = await bus.read(bus.topics.deadletter, 1_000_000, timeout_s=0.5)
        return [r for _, r in letters if r["key"] == key]
    return await eventually(probe, lambda found: len(found) >= count, timeout_s=30)


async def test_case_shows_the_thread_of_a_case(bus: Bus) -> None:
    """A query and its reply, with who got each and who was refused, oldest first."""
    q = query(envelope("FR-PN", to=["DE-BKA", "IT-PS"], restricted=["IT-PS"], case_id="CASE-THREAD"),
              "Known to you?")
    await _routed(bus, "FR-PN", "Query", q)
    r = reply(envelope("DE-BKA", correlation_id=q["envelope"]["message_id"], case_id="CASE-THREAD"),
              "HIT", information="Known for fraud.")
    await _routed(bus, "DE-BKA", "Reply", r)

    result = await cli("case", "CASE-THREAD", "--json", settings=bus.settings)
    assert result.code == 0, result.err
    rows = [(x["message_type"], x["originator"], x["recipient"], x["decision"], x["reason_code"])
            for x in result.json()]
    assert rows == [("Query", "FR-PN", "DE-BKA", "DELIVERED", None),
                    ("Query", "FR-PN", "IT-PS", "DENIED", "RESTRICTED_BY_ORIGINATOR"),
                    ("Reply", "DE-BKA", "FR-PN", "DELIVERED", None)]

    table = await cli("case", "CASE-THREAD", settings=bus.settings)
    assert table.code == 0, table.err
    assert "RESTRICTED_BY_ORIGINATOR" in table.out
    assert q["envelope"]["message_id"] in table.out
    assert "answered by" in table.out  # the query's lifecycle, from bus.queries
    assert "ANSWERED" in table.out

    missing = await cli("case", "CASE-NEVER", "--json", settings=bus.settings)
    assert missing.code == 1
    assert missing.json() == []
    assert "no routing decision about case CASE-NEVER" in missing.one_error_line()


async def test_trace_shows_every_decision_and_the_answers(bus: Bus) -> None:
    """trace: who got a message, who was refused and why, and the reply that answered it."""
    q = query(envelope("NL-KLPD", to=["DE-BKA", "ES-CNP"], restricted=["ES"], case_id="CASE-TRACE"),
              "Seen this van?")
    await _routed(bus, "NL-KLPD", "Query", q)
    r = reply(envelope("DE-BKA", correlation_id=q["envelope"]["message_id"]), "NO_HIT")
    await _routed(bus, "DE-BKA", "Reply", r)

    result = await cli("trace", q["envelope"]["message_id"], "--json", settings=bus.settings)
    assert result.code == 0, result.err
    found = result.json()
    assert {(d["recipient"], d["decision"]) for d in found["decisions"]} == {
        ("DE-BKA", "DELIVERED"), ("ES-CNP", "DENIED")}
    assert [(x["message_id"], x["recipient"]) for x in found["related"]] == [
        (r["envelope"]["message_id"], "NL-KLPD")]
    assert found["dead_letters"] == []
    assert found["query"]["deadline"] == q["deadline"]
    assert found["query"]["requested"] == ["DE-BKA"]  # ES-CNP never received it: nothing to await
    assert found["query"]["state"] == "ANSWERED"

    missing = await cli("trace", "00000000-0000-4000-8000-000000000000", settings=bus.settings)
    assert missing.code == 1
    assert "nothing on this bus about message" in missing.one_error_line()


async def test_a_spoofed_message_is_traced_to_its_dead_letter(bus: Bus) -> None:
    """A message written to another agency's outbox is dead-lettered; trace finds it by message id."""
    spoof = query(envelope("FR-PN", to=["DE-BKA"], case_id="CASE-SPOOF"), "Pretending")
    await bus.send("Query", spoof, outbox_of="IT-PS")
    await _dead_letters_keyed(bus, b"CASE-SPOOF")
    result = await cli("trace", spoof["envelope"]["message_id"], "--json", settings=bus.settings)
    assert result.code == 0, result.err
    letters = result.json()["dead_letters"]
    assert [(x["error_code"], x["outbox_owner"], x["claimed_originator"]) for x in letters] == [
        ("SPOOFED_ORIGINATOR", "IT-PS", "FR-PN")]


async def test_deadletter_list_show_and_replay(bus: Bus, tmp_path: Path) -> None:
    """Garbage is dead-lettered; show explains it; replay re-sends the original or a corrected record."""
    await bus.send_raw(bus.topics.outbox("Alert", "PL-KGP"), b"not avro at all", key=b"k-garbage")
    await _dead_letters_keyed(bus, b"k-garbage")
    listed = await cli("deadletter", "list", "--json", settings=bus.settings)
    assert listed.code == 0, listed.err
    letter = next(x for x in listed.json() if x["key"] == "k-garbage")
    assert letter["error_code"] == "BAD_MAGIC_BYTE"
    short = letter["dead_letter_id"][:8]

    show = await cli("deadletter", "show", short, settings=bus.settings)
    assert show.code == 0, show.err
    assert "BAD_MAGIC_BYTE" in show.out
    assert "undecodable" in show.out
    shown = await cli("deadletter", "show", short, "--json", settings=bus.settings)
    assert shown.json()["source_topic"] == bus.topics.outbox("Alert", "PL-KGP")

    again = await cli("deadletter", "replay", short, settings=bus.settings)
    assert again.code == 0, again.err
    assert "original value (15 bytes)" in again.out
    await _dead_letters_keyed(bus, b"k-garbage", 2)  # still garbage: refused again, with the reason

    fixed = tmp_path / "fixed.json"
    fixed.write_text('{"from": "PL-KGP", "to": ["DE-BKA"], "case": "CASE-FIXED", "subject": "Fixed"}')
    replayed = await cli("deadletter", "replay", short, "--file", str(fixed), "--json", settings=bus.settings)
    assert replayed.code == 0, replayed.err
    new_id = replayed.json()["message_id"]

    async def inbox() -> list[str]:
        delivered = await bus.read(bus.topics.inbox("Alert", "DE-BKA"), 1_000_000, timeout_s=0.5)
        return [r["envelope"]["message_id"] for _, r in delivered]
    await eventually(inbox, lambda ids: new_id in ids, timeout_s=30)

    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("from: FR-PN\nto: [DE-BKA]\n")
    refused = await cli("deadletter", "replay", short, "--file", str(wrong), settings=bus.settings)
    assert refused.code == 1
    assert "FR-PN" in refused.one_error_line()

    unknown = await cli("deadletter", "show", "ffffffff", settings=bus.settings)
    assert unknown.code == 1
    assert "no dead letter ffffffff" in unknown.one_error_line()


async def test_inspection_with_the_broker_down_fails_fast_in_one_line(bus: Bus) -> None:
    """case, trace and deadletter say the broker does not answer, quickly."""
    env = cli_env(bus.settings, LIAISON_BOOTSTRAP_SERVERS=CLOSED_PORT)
    commands = [["case", "CASE-1"], ["deadletter", "show", "abcdef12"]]
    results = await asyncio.gather(*(cli(*args, env=env) for args in commands))
    for args, r in zip(commands, results, strict=True):
        assert r.code == 1, (args, r.err)
        assert "no Kafka broker answers" in r.one_error_line(), args
        assert r.seconds < 10, args
