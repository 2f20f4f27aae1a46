"""The router's routing step for case-based cooperation, without Kafka: what one record causes.

The state is an in-memory stand-in for the compacted tables (the same RoutedView the router reads);
each test feeds records through `Pipeline.handle` and commits the batch's writes into it, as the
router does after a transaction.
"""

from __future__ import annotations

from typing import Any

import pytest

from liaison.case_groups import MAX_RUNNING, CaseGroup
from liaison.codec import Codec
from liaison.directory import Agency, Agreement, Directory, Officer
from liaison.policy import PolicyConfig, compile_policy
from liaison.policy import reasons as R
from liaison.policy.model import match_key
from liaison.sdk import builders as b
from liaison.topics import Topics
from services.router.pipeline import BatchOutcome, Pipeline, Source
from tests.offline_codec import offline_codec
from tests.offline_state import commit, offline_state

DAY = 86_400_000
TOPICS = Topics("")


def directory() -> Directory:
    return Directory(agencies=[
        Agency("FR-SPOC", "SPOC France", spoc=True),
        Agency("FR-PN", "Police nationale", designated=True, clearances=frozenset({"FINGERPRINT"})),
        Agency("DE-SPOC", "SPOC Germany", spoc=True),
        Agency("DE-BKA", "Bundeskriminalamt", designated=True, clearances=frozenset({"FINGERPRINT"})),
        Agency("ES-CNP", "Policia Nacional"),
        Agency("CO-DIJIN", "DIJIN Colombia"),
    ], agreements=[Agreement("PRUM", frozenset({"FR", "DE"}), frozenset({"FINGERPRINT"}))], officers=[
        Officer("FR-PN-BOGOTA", "FR-PN", post="Bogota", cases=frozenset({"OP-CONDOR"}),
                countries=frozenset({"CO"}), starts_at=0, ends_at=b.now_ms() + DAY),
    ])


@pytest.fixture(scope="module")
def codec() -> Codec:
    return offline_codec()


class Harness:
    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.state = offline_state(TOPICS)
        engine = compile_policy(PolicyConfig(), directory())
        self.pipeline = Pipeline(codec, lambda: engine, self.state, TOPICS)
        self.offset = 0

    def send(self, message_type: str, record: dict[str, Any], *, outbox: str | None = None) -> BatchOutcome:
        """Route one record written to `outbox`'s outbox (default: its originator's); commit it."""
        self.offset += 1
        value = self.codec.encode(message_type, record)
        src = Source(TOPICS.outbox(message_type, outbox or record["envelope"]["originator"]), 0, self.offset,
                     None, None, value)
        out = BatchOutcome()
        self.pipeline.handle(src, (message_type, self.codec.decode(value)[1]), out)
        commit(self.state, out)
        return out

    def delivered(self, out: BatchOutcome, topic: str) -> list[dict[str, Any]]:
        return [self.codec.decode(o.value)[1] for o in out.outputs if o.topic == topic]

    def audit(self, out: BatchOutcome) -> list[dict[str, Any]]:
        return self.delivered(out, TOPICS.audit)


@pytest.fixture
def bus(codec: Codec) -> Harness:
    return Harness(codec)


def test_a_spoc_copy_is_delivered_marked_with_its_own_receipt(bus: Harness) -> None:
    ask = b.query(b.envelope("FR-PN", to=["DE-SPOC"], case_id="C1"), "Known?")
    out = bus.send("Query", ask)
    (copy,) = bus.delivered(out, TOPICS.inbox("Query", "FR-SPOC"))
    assert copy["envelope"]["copy"] == {"kind": "SPOC_OWN", "addressee": "DE-SPOC"}
    (original,) = bus.delivered(out, TOPICS.inbox("Query", "DE-SPOC"))
    assert original["envelope"]["copy"] is None
    receipts = {r["recipient"]: r for r in bus.delivered(out, TOPICS.receipts("FR-PN"))}
    assert receipts["FR-SPOC"]["reason_code"] == R.SPOC_COPY_ART_4_1
    assert receipts["DE-SPOC"]["kind"] == "DELIVERED"
    awaited = out.queries[ask["envelope"]["message_id"]]  # the deadlines service waits on DE-SPOC only
    assert "DE-SPOC" in str(awaited)
    assert "FR-SPOC" not in str(awaited)


def test_a_waived_copy_is_audited_with_its_ground(bus: Harness) -> None:
    ask = b.query(b.envelope("FR-PN", to=["DE-SPOC"], spoc_copy_waiver="SAFETY_OF_PERSON"), "Known?")
    out = bus.send("Query", ask)
    assert not bus.delivered(out, TOPICS.inbox("Query", "FR-SPOC"))
    (waived,) = [a for a in bus.audit(out) if a["decision"] == "WAIVED"]
    assert (waived["recipient"], waived["reason_code"]) == ("FR-SPOC", R.SPOC_COPY_WAIVED)
    assert "SAFETY_OF_PERSON" in waived["reason"]


def test_an_officer_gets_its_cases_copies_and_sends_for_its_agency(bus: Harness) -> None:
    tip = b.alert(b.envelope("CO-DIJIN", to=["FR-PN"], case_id="OP-CONDOR"))
    out = bus.send("Alert", tip)
    (copy,) = bus.delivered(out, TOPICS.inbox("Alert", "FR-PN-BOGOTA"))
    assert copy["envelope"]["copy"] == {"kind": "LIAISON_OFFICER", "addressee": "FR-PN"}
    (audited,) = [a for a in bus.audit(out) if a["officer"] == "FR-PN-BOGOTA"]
    assert (audited["recipient"], audited["reason_code"]) == ("FR-PN-BOGOTA", R.OFFICER_COPY)

    elsewhere = bus.send("Alert", b.alert(b.envelope("ES-CNP", to=["FR-PN"], case_id="OTHER")))
    assert not bus.delivered(elsewhere, TOPICS.inbox("Alert", "FR-PN-BOGOTA"))

    ask = b.query(b.envelope("FR-PN", to=["CO-DIJIN"], case_id="OP-CONDOR", officer="FR-PN-BOGOTA"), "Seen?")
    sent = bus.send("Query", ask, outbox="FR-PN-BOGOTA")
    (got,) = bus.delivered(sent, TOPICS.inbox("Query", "CO-DIJIN"))
    assert (got["envelope"]["originator"], got["envelope"]["officer"]) == ("FR-PN", "FR-PN-BOGOTA")
    assert bus.delivered(sent, TOPICS.receipts("FR-PN-BOGOTA"))  # the officer is told, as the sender
    assert {a["officer"] for a in bus.audit(sent)} == {"FR-PN-BOGOTA"}


def test_a_case_group_is_formed_joined_addressed_and_closed(bus: Harness) -> None:
    ends = b.now_ms() + DAY
    propose = b.query(b.envelope("FR-PN", to=["DE-BKA", "ES-CNP"], case_id="ORION", purpose="joint team",
                                 legal_basis="EU MLA Convention 2000 Art. 13"),
                      "Join JIT-ORION?", case_group=b.case_group_change("JIT-ORION", "PROPOSE", ends_at=ends))
    out = bus.send("Query", propose)
    recorded = [a["reason_code"] for a in bus.audit(out) if a["decision"] == "RECORDED"]
    assert recorded == [R.CASE_GROUP_PROPOSED]
    invite = propose["envelope"]["message_id"]
    bus.send("Reply", b.invitation_answer(b.envelope("DE-BKA", correlation_id=invite), accept=True))
    declined = bus.send("Reply", b.invitation_answer(b.envelope("ES-CNP", correlation_id=invite),
                                                     accept=False))
    assert [a["reason_code"] for a in bus.audit(declined) if a["decision"] == "RECORDED"] == [
        R.CASE_GROUP_DECLINED]
    group = CaseGroup.from_value(bus.state.casegroups.items["JIT-ORION"])
    assert set(group.members) == {"FR-PN", "DE-BKA"}
    assert not group.invited
    assert "ES-CNP" in group.left

    note = bus.send("Alert", b.alert(b.envelope("DE-BKA", groups=["JIT-ORION"], case_id="ORION")))
    assert bus.delivered(note, TOPICS.inbox("Alert", "FR-PN"))
    assert not bus.delivered(note, TOPICS.inbox("Alert", "ES-CNP"))

    close = b.query(b.envelope("FR-PN", groups=["JIT-ORION"], case_id="ORION"), "Closing.",
                    case_group=b.case_group_change("JIT-ORION", "CLOSE"))
    closed = bus.send("Query", close)
    (told,) = bus.delivered(closed, TOPICS.receipts("DE-BKA"))
    assert told["kind"] == "GROUP_CHANGED"
    assert told["reason_code"] == R.CASE_GROUP_CLOSED
    after = bus.send("Alert", b.alert(b.envelope("DE-BKA", groups=["JIT-ORION"], case_id="ORION")))
    assert not bus.delivered(after, TOPICS.inbox("Alert", "FR-PN"))
    (receipt,) = bus.delivered(after, TOPICS.receipts("DE-BKA"))
    assert receipt["reason_code"] == R.GROUP_EXPIRED


def test_a_group_past_its_end_date_is_closed_once_and_its_members_told(bus: Harness) -> None:
    soon = b.now_ms() + 60_000
    propose = b.query(b.envelope("FR-PN", to=["DE-BKA"], case_id="ORION"), "Join JIT-ORION?",
                      case_group=b.case_group_change("JIT-ORION", "PROPOSE", ends_at=soon))
    bus.send("Query", propose)
    bus.send("Reply", b.invitation_answer(b.envelope("DE-BKA",
                                                     correlation_id=propose["envelope"]["message_id"]),
                                          accept=True))
    early = BatchOutcome()
    assert bus.pipeline.end_case_groups(soon - 1, early) == 0
    assert not early.outputs
    out = BatchOutcome()
    assert bus.pipeline.end_case_groups(soon, out) == 1
    commit(bus.state, out)
    told = {r["envelope"]["addressing"]["agencies"][0]: r for r in
            bus.delivered(out, TOPICS.receipts("FR-PN")) + bus.delivered(out, TOPICS.receipts("DE-BKA"))}
    assert set(told) == {"FR-PN", "DE-BKA"}
    assert {r["kind"] for r in told.values()} == {"GROUP_CHANGED"}
    assert {r["reason_code"] for r in told.values()} == {R.CASE_GROUP_ENDED}
    (audit,) = bus.audit(out)
    assert (audit["decision"], audit["reason_code"]) == ("RECORDED", R.CASE_GROUP_ENDED)
    assert audit["message_id"] == propose["envelope"]["message_id"]
    group = CaseGroup.from_value(bus.state.casegroups.items["JIT-ORION"])
    assert group.status == "CLOSED"
    assert group.history[-1]["action"] == "ENDED"
    again = BatchOutcome()
    assert bus.pipeline.end_case_groups(soon + 1, again) == 0  # closed: never told twice


def _hit_check(bus: Harness) -> str:
    check = b.query(b.envelope("FR-PN", to=["DE-BKA"], case_id="PRUM-1", categories=["FINGERPRINT"]),
                    "Fingerprint search", kind="HIT_CHECK", criteria={"fingerprint_ref": "AFIS-FR-1"})
    bus.send("Query", check)
    query_id: str = check["envelope"]["message_id"]
    out = bus.send("Reply", b.reply(b.envelope("DE-BKA", correlation_id=query_id, case_id="PRUM-1"), "HIT",
                                    reference="AFIS-DE-77"))
    assert [a["reason_code"] for a in bus.audit(out) if a["decision"] == "RECORDED"] == [R.MATCH_PENDING]
    return query_id


def _data_request(bus: Harness) -> tuple[dict[str, Any], BatchOutcome]:
    request = b.query(b.envelope("FR-PN", to=["DE-BKA"], case_id="PRUM-1"), "Your data on the hit",
                      kind="DATA_REQUEST", reference="AFIS-DE-77")
    return request, bus.send("Query", request)


@pytest.mark.parametrize("confirmed", [True, False])
def test_a_data_request_is_held_until_the_match_is_decided(bus: Harness, confirmed: bool) -> None:
    query_id = _hit_check(bus)
    request, held = _data_request(bus)
    assert not bus.delivered(held, TOPICS.inbox("Query", "DE-BKA"))
    (receipt,) = bus.delivered(held, TOPICS.receipts("FR-PN"))
    assert (receipt["kind"], receipt["reason_code"]) == ("HELD_FOR_REVIEW", R.MATCH_NOT_CONFIRMED)

    verdict = b.reply(b.envelope("DE-BKA", correlation_id=query_id, case_id="PRUM-1"),
                      "HIT" if confirmed else "NO_HIT", reference="AFIS-DE-77",
                      confirmation=b.match_confirmation("Insp. Weber, AFIS", confirmed=confirmed))
    decided = bus.send("Reply", verdict)
    released = bus.delivered(decided, TOPICS.inbox("Query", "DE-BKA"))
    assert [q["envelope"]["message_id"] for q in released] == ([request["envelope"]["message_id"]]
                                                               if confirmed else [])
    recorded = [a["reason_code"] for a in bus.audit(decided) if a["decision"] == "RECORDED"]
    assert recorded == [R.MATCH_CONFIRMED if confirmed else R.MATCH_REJECTED]
    assert bus.state.consents.items[match_key("DE-BKA", "AFIS-DE-77")]["verified_by"] == "Insp. Weber, AFIS"
    if not confirmed:
        (denied,) = [r for r in bus.delivered(decided,
                                              TOPICS.receipts("FR-PN")) if r["recipient"] == "DE-BKA"]
        assert denied["reason_code"] == R.MATCH_REJECTED
        _, again = _data_request(bus)  # a rejected match closes the thread
        assert not bus.delivered(again, TOPICS.inbox("Query", "DE-BKA"))


def test_a_hit_on_a_search_without_biometrics_needs_no_confirmation(bus: Harness) -> None:
    check = b.query(b.envelope("FR-PN", to=["DE-BKA"], case_id="P"), "Plate", kind="HIT_CHECK",
                    criteria={"plate": "AB-123-CD"})
    bus.send("Query", check)
    bus.send("Reply", b.reply(b.envelope("DE-BKA", correlation_id=check["envelope"]["message_id"]), "HIT",
                              reference="VRN-1"))
    _, _out = _data_request(bus)
    assert not bus.state.consents.items
    request = b.query(b.envelope("FR-PN", to=["DE-BKA"]), "Data", kind="DATA_REQUEST", reference="VRN-1")
    assert bus.delivered(bus.send("Query", request), TOPICS.inbox("Query", "DE-BKA"))


def _proposal(name: str, ends_at: int) -> dict[str, Any]:
    return b.query(b.envelope("FR-PN", to=["DE-BKA"], case_id=name), f"Join {name}?",
                   case_group=b.case_group_change(name, "PROPOSE", ends_at=ends_at))


def _refused(out: BatchOutcome, bus: Harness) -> list[str]:
    return [r["reason"] for r in bus.delivered(out, TOPICS.receipts("FR-PN"))
            if r["reason_code"] == R.CASE_GROUP_REFUSED]


def test_an_agency_runs_a_bounded_number_of_groups_even_within_one_batch(bus: Harness) -> None:
    ends = b.now_ms() + DAY
    for i in range(MAX_RUNNING - 2):
        assert not _refused(bus.send("Query", _proposal(f"JIT-{i}", ends)), bus)
    assert bus.state.groups_run_by("FR-PN") == MAX_RUNNING - 2
    batch = BatchOutcome()  # five proposals routed in one batch, none committed before the next
    for i in range(5):
        bus.offset += 1
        value = bus.codec.encode("Query", _proposal(f"JIT-BATCH-{i}", ends))
        src = Source(TOPICS.outbox("Query", "FR-PN"), 0, bus.offset, None, None, value)
        bus.pipeline.handle(src, ("Query", bus.codec.decode(value)[1]), batch)
    refusals = _refused(batch, bus)
    assert len(refusals) == 3
    assert all(f"at most {MAX_RUNNING} case groups" in why for why in refusals)
    commit(bus.state, batch)
    assert bus.state.groups_run_by("FR-PN") == MAX_RUNNING
    assert bus.state.groups_run_by("DE-BKA") == 0  # a member, not the initiator
    closing = b.query(b.envelope("FR-PN", to=["DE-BKA"], case_id="JIT-0"), "Closing JIT-0.",
                      case_group=b.case_group_change("JIT-0", "CLOSE"))
    bus.send("Query", closing)
    assert bus.state.groups_run_by("FR-PN") == MAX_RUNNING - 1  # a closed group frees its place
    assert not _refused(bus.send("Query", _proposal("JIT-AFTER", ends)), bus)


def test_the_end_date_sweep_reads_only_the_groups_that_run(bus: Harness) -> None:
    soon = b.now_ms() + 60_000
    bus.send("Query", _proposal("JIT-SOON", soon))
    bus.send("Query", _proposal("JIT-LATER", soon + DAY))
    assert list(bus.state.casegroups.items.marked()) == ["FR-PN/JIT-LATER", "FR-PN/JIT-SOON"]
    out = BatchOutcome()
    assert bus.pipeline.end_case_groups(soon, out) == 1
    commit(bus.state, out)
    assert list(bus.state.casegroups.items.marked()) == ["FR-PN/JIT-LATER"]  # the ended one left the marks
    bus.state.casegroups.put_local("JIT-LATER", None)  # deleted while it ran: its mark is dropped
    assert bus.pipeline.end_case_groups(soon + 2 * DAY, BatchOutcome()) == 0
    assert list(bus.state.casegroups.items.marked()) == []
