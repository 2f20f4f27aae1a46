"""The router end to end on a real broker: deliveries, receipts, audit and dead letters."""

from __future__ import annotations

from typing import Any

from liaison.sdk import alert, envelope, query, reply
from tests.bus_harness import Bus, running_bus
from tests.kafka_helpers import eventually


def _by_recipient(receipts: list[tuple[str, dict[str, Any]]], message_id: str) -> dict[str, dict[str, Any]]:
    return {r["recipient"]: r for name, r in receipts
            if name == "Receipt" and r["envelope"]["correlation_id"] == message_id}


async def test_diffusion_respects_restriction_and_reports_each_recipient(kafka_bootstrap: str) -> None:
    """A diffusion reaches its addressees except the country the provider restricted; receipts say so."""
    async with running_bus(kafka_bootstrap) as bus:
        msg = alert(envelope("FR-PN", to=["DE-BKA", "IT-PS", "ES-CNP"], restricted=["IT"],
                             case_id="CASE-DIFF", tlp="AMBER"), kind="DIFFUSION", colour="BLUE")
        await bus.send("Alert", msg)
        mid = msg["envelope"]["message_id"]

        receipts = await bus.read(bus.topics.receipts("FR-PN"), 3)
        by = _by_recipient(receipts, mid)
        assert by["DE-BKA"]["kind"] == "DELIVERED"
        assert by["ES-CNP"]["kind"] == "DELIVERED"
        assert by["IT-PS"]["kind"] == "DENIED"
        assert by["IT-PS"]["reason_code"] == "RESTRICTED_BY_ORIGINATOR"

        delivered = await bus.read_raw(bus.topics.inbox("Alert", "DE-BKA"), 1)
        assert delivered[0].value == bus.codec.encode("Alert", msg)  # the original bytes, unchanged
        assert delivered[0].key == b"CASE-DIFF"
        assert await bus.read(bus.topics.inbox("Alert", "IT-PS"), 1, timeout_s=2) == []

        audit = [r for _, r in await bus.read(bus.topics.audit, 3) if r["message_id"] == mid]
        assert sorted((a["recipient"], a["decision"]) for a in audit) == [
            ("DE-BKA", "DELIVERED"), ("ES-CNP", "DELIVERED"), ("IT-PS", "DENIED")]


async def _query_and_reply(bus: Bus) -> tuple[dict[str, Any], dict[str, Any]]:
    q = query(envelope("FR-PN", to=["DE-BKA"], case_id="CASE-Q", tlp="RED", handling=["H0"]),
              "Is this person known to you?")
    await bus.send("Query", q)
    inbox = await bus.read(bus.topics.inbox("Query", "DE-BKA"), 1)
    assert inbox[0][1]["envelope"]["message_id"] == q["envelope"]["message_id"]
    r = reply(envelope("DE-BKA", correlation_id=q["envelope"]["message_id"], case_id="CASE-Q",
                       tlp="RED"), "NO_HIT", information="Not known.")
    await bus.send("Reply", r)
    return q, r


async def test_query_and_reply_reach_only_the_parties(kafka_bootstrap: str) -> None:
    """A TLP:RED query goes to the named agency; its reply goes back to the asker only."""
    async with running_bus(kafka_bootstrap) as bus:
        _, r = await _query_and_reply(bus)
        replies = await bus.read(bus.topics.inbox("Reply", "FR-PN"), 1)
        assert replies[0][1]["envelope"]["message_id"] == r["envelope"]["message_id"]
        assert replies[0][1]["outcome"] == "NO_HIT"


async def test_reply_from_an_agency_that_never_got_the_query_is_denied(kafka_bootstrap: str) -> None:
    """Only a recipient of the query may answer it; the intruder learns nothing about the query."""
    async with running_bus(kafka_bootstrap) as bus:
        q, _ = await _query_and_reply(bus)
        intruder = reply(envelope("ES-CNP", correlation_id=q["envelope"]["message_id"]), "HIT",
                         information="We know him.")
        await bus.send("Reply", intruder)
        receipts = [r for _, r in await bus.read(bus.topics.receipts("ES-CNP"), 1)]
        assert [(r["kind"], r["reason_code"], r["recipient"]) for r in receipts] == [
            ("REJECTED", "UNKNOWN_CORRELATION", None)]  # as if the query did not exist
        letters = [r for _, r in await bus.read(bus.topics.deadletter, 1)]
        assert [r["error_code"] for r in letters] == ["NOT_A_RECIPIENT"]
        inbox = await bus.read(bus.topics.inbox("Reply", "FR-PN"), 2, timeout_s=3)
        assert inbox
        assert all(r["envelope"]["originator"] == "DE-BKA" for _, r in inbox)


async def test_bad_input_is_dead_lettered_while_good_traffic_flows(kafka_bootstrap: str) -> None:
    """Garbage bytes, an unknown schema id and a spoofed originator go to the dead-letter topic."""
    async with running_bus(kafka_bootstrap) as bus:
        good = [alert(envelope("NL-KLPD", to=["DE-BKA"], case_id=f"G{i}")) for i in range(3)]
        spoofed = alert(envelope("FR-PN", to=["DE-BKA"]))
        outbox = bus.topics.outbox("Alert", "NL-KLPD")
        await bus.send("Alert", good[0])
        await bus.send_raw(outbox, b"not avro at all")
        await bus.send("Alert", good[1])
        await bus.send_raw(outbox, b"\x00\x00\x01\x86\x9f" + b"\x02" * 20)  # schema id 99999
        await bus.send("Alert", spoofed, outbox_of="NL-KLPD")
        await bus.send("Alert", good[2])

        letters = await bus.read(bus.topics.deadletter, 3)
        codes = sorted(r["error_code"] for _, r in letters)
        assert codes == ["BAD_MAGIC_BYTE", "SPOOFED_ORIGINATOR", "UNKNOWN_SCHEMA_ID"]
        assert {r["source_topic"] for _, r in letters} == {outbox}
        garbage = next(r for _, r in letters if r["error_code"] == "BAD_MAGIC_BYTE")
        assert garbage["value"] == b"not avro at all"
        spoof = next(r for _, r in letters if r["error_code"] == "SPOOFED_ORIGINATOR")
        assert spoof["claimed_originator"] == "FR-PN"
        assert spoof["outbox_owner"] == "NL-KLPD"

        inbox = await bus.read(bus.topics.inbox("Alert", "DE-BKA"), 3, settle_s=1.0)
        assert sorted(r["envelope"]["case_id"] for _, r in inbox) == ["G0", "G1", "G2"]
        rejected = [r for _, r in await bus.read(bus.topics.receipts("NL-KLPD"), 6)
                    if r["kind"] == "REJECTED"]
        assert len(rejected) == 3


async def test_biometric_data_is_removed_for_a_partner_without_agreement(kafka_bootstrap: str) -> None:
    """Fingerprints reach the Prüm partner intact and reach an uncleared agency without them."""
    from liaison.sdk.builders import subject  # noqa: PLC0415

    async with running_bus(kafka_bootstrap) as bus:
        q = query(envelope("FR-PN", to=["DE-BKA", "BR-PF"], categories=["FINGERPRINT"]),
                  "Do these prints match?", kind="HIT_CHECK",
                  subj=subject("latent prints", kind="UNIDENTIFIED_PERSON",
                               biometrics={"fingerprint_ref": "AFIS-1", "fingerprints": b"\x01\x02"}))
        await bus.send("Query", q)
        german = (await bus.read(bus.topics.inbox("Query", "DE-BKA"), 1))[0][1]
        brazilian = (await bus.read(bus.topics.inbox("Query", "BR-PF"), 1))[0][1]
        assert german["subject"]["biometrics"]["fingerprints"] == b"\x01\x02"
        assert german["envelope"]["redactions"] == []
        biometrics = brazilian["subject"]["biometrics"]
        assert biometrics is None or (biometrics["fingerprints"] is None
                                      and biometrics["fingerprint_ref"] is None)
        assert brazilian["envelope"]["redactions"]
        receipts = _by_recipient(await bus.read(bus.topics.receipts("FR-PN"), 2),
                                 q["envelope"]["message_id"])
        # the sender learns that fields were removed, not BR-PF's clearances; the audit keeps the detail
        assert receipts["BR-PF"]["reason_code"] == "FIELDS_REMOVED"
        audit = [r for _, r in await bus.read(bus.topics.audit, 2)
                 if r["message_id"] == q["envelope"]["message_id"] and r["recipient"] == "BR-PF"]
        assert [(a["decision"], a["reason_code"]) for a in audit] == [("REDACTED", "BIOMETRIC_NOT_CLEARED")]


async def test_h2_information_is_passed_on_only_after_the_provider_consents(kafka_bootstrap: str) -> None:
    """Onward sharing of H2 content is denied until a GRANTED reply to a CONSENT query is on record."""
    async with running_bus(kafka_bootstrap) as bus:
        original = alert(envelope("DE-BKA", to=["NL-KLPD"], handling=["H2"], case_id="H2-CASE"))
        await bus.send("Alert", original)
        await bus.read(bus.topics.inbox("Alert", "NL-KLPD"), 1)
        source = original["envelope"]["message_id"]

        onward = alert(envelope("NL-KLPD", to=["IT-PS"], derived_from=source, case_id="H2-CASE"))
        await bus.send("Alert", onward)
        first = _by_recipient(await bus.read(bus.topics.receipts("NL-KLPD"), 1),
                              onward["envelope"]["message_id"])
        assert first["IT-PS"]["reason_code"] == "NO_CONSENT_FOR_H2"

        ask = query(envelope("NL-KLPD", to=["DE-BKA"], derived_from=source, case_id="H2-CASE"),
                    "May we pass your alert on to Italy?", kind="CONSENT")
        await bus.send("Query", ask)
        await bus.read(bus.topics.inbox("Query", "DE-BKA"), 1)
        await bus.send("Reply", reply(envelope("DE-BKA", correlation_id=ask["envelope"]["message_id"],
                                               case_id="H2-CASE"), "GRANTED"))
        await bus.read(bus.topics.inbox("Reply", "NL-KLPD"), 1)

        again = alert(envelope("NL-KLPD", to=["IT-PS"], derived_from=source, case_id="H2-CASE"))
        await bus.send("Alert", again)
        delivered = await bus.read(bus.topics.inbox("Alert", "IT-PS"), 1)
        assert [r["envelope"]["message_id"] for _, r in delivered] == [again["envelope"]["message_id"]]


async def test_two_routers_see_each_others_routed_messages(kafka_bootstrap: str) -> None:
    """A reply routed by one instance finds the query another instance routed a moment before.

    The pairs are chosen from the assignment, so that each query's outbox belongs to one instance
    and its reply's outbox to the other (the assignor gives whole runs of topics to one member)."""
    async with running_bus(kafka_bootstrap) as bus:
        await bus.start_router()  # a second instance in the same group: partitions are split

        async def owned() -> list[int]:
            return [router.owned_partitions for router, _, _ in bus.routers]

        await eventually(owned, lambda counts: all(counts) and sum(counts) == 45, timeout_s=60)
        first, second = (router._owned for router, _, _ in bus.routers)
        agencies = sorted(bus.directory.agencies)
        pairs = [(asker, answerer) for asker in agencies for answerer in agencies if asker != answerer
                 and any((bus.topics.outbox("Query", asker), 0) in mine
                         and (bus.topics.outbox("Reply", answerer), 0) in other
                         for mine, other in ((first, second), (second, first)))][:10]
        assert pairs, "no query and reply outboxes on different instances"
        for i, (asker, answerer) in enumerate(pairs):
            q = query(envelope(asker, to=[answerer], case_id=f"X-{i}"), "Known?")
            await bus.send("Query", q)
            await bus.read(bus.topics.inbox("Query", answerer), 1)
            await bus.send("Reply", reply(envelope(answerer, correlation_id=q["envelope"]["message_id"],
                                                   case_id=f"X-{i}"), "NO_HIT"))
        for asker in sorted({a for a, _ in pairs}):
            expected = sorted(answerer for a, answerer in pairs if a == asker)
            replies = await bus.read(bus.topics.inbox("Reply", asker), len(expected))
            assert sorted(r["envelope"]["originator"] for _, r in replies) == expected


async def test_a_rejected_message_is_named_in_its_senders_receipt(kafka_bootstrap: str) -> None:
    """A readable record refused whole (here: a reply to nothing) tells its sender which message."""
    async with running_bus(kafka_bootstrap) as bus:
        orphan = reply(envelope("DE-BKA", correlation_id="00000000-0000-4000-8000-000000000001",
                                case_id="ORPHAN"), "NO_HIT")
        await bus.send("Reply", orphan)
        receipts = [r for _, r in await bus.read(bus.topics.receipts("DE-BKA"), 1)]
        assert [(r["kind"], r["reason_code"], r["envelope"]["correlation_id"]) for r in receipts] == [
            ("REJECTED", "UNKNOWN_CORRELATION", orphan["envelope"]["message_id"])]
