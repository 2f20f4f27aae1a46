"""Biometric data: clearance and agreement, redacted or denied per policy."""

from __future__ import annotations

from typing import Any

from liaison.directory import Agency, Agreement, Directory
from liaison.policy import MemoryState, RoutingResult, apply_redactions
from liaison.policy import reasons as R
from tests.unit.policy_fixtures import ALL_BIO, NOW, alert, engine, query, reply, routed


def route(message_type: str, record: dict[str, Any], *, directory: Directory | None = None,
          state: MemoryState | None = None, now: int = NOW, **policy: Any) -> RoutingResult:
    owner = record["envelope"]["originator"]
    return engine(directory, **policy).route(message_type, record, outbox_owner=owner, now_ms=now,
                                             state=state or MemoryState())


def decision(result: RoutingResult, recipient: str) -> Any:
    return next(d for d in result.decisions if d.recipient == recipient)


def test_cleared_recipient_with_agreement_gets_everything() -> None:
    """Clearance plus an agreement covering every category: delivered whole."""
    d = decision(route("Alert", alert(agencies=["DE-BKA"], with_biometrics=True)), "DE-BKA")
    assert (d.outcome, d.reason_code, d.redactions) == ("DELIVER", None, ())


def test_recipient_without_clearance_gets_a_redacted_copy() -> None:
    """No clearance at all: subject.biometrics is removed and the reason says why."""
    d = decision(route("Alert", alert(agencies=["BR-PF"], with_biometrics=True)), "BR-PF")
    assert (d.outcome, d.reason_code, d.redactions) == ("DELIVER", R.BIOMETRIC_NOT_CLEARED,
                                                         ("subject.biometrics",))
    assert d.rule == "biometrics"
    assert d.reason is not None
    assert "subject.biometrics" in d.reason


def test_cleared_recipient_without_agreement_gets_a_redacted_copy() -> None:
    """Cleared for fingerprints but no agreement between these two agencies: NO_AGREEMENT."""
    record = alert("FR-GN", agencies=["US-FBI"], data_categories=["FINGERPRINT"])
    d = decision(route("Alert", record), "US-FBI")
    assert (d.reason_code, d.redactions) == (R.NO_AGREEMENT, ("subject.biometrics.fingerprint_ref",
                                                              "subject.biometrics.fingerprints"))


def test_only_the_uncovered_categories_are_removed() -> None:
    """Fingerprints covered, DNA and face not: only those fields go."""
    d = decision(route("Alert", alert(agencies=["US-FBI"], with_biometrics=True)), "US-FBI")
    assert d.reason_code == R.BIOMETRIC_NOT_CLEARED
    assert d.redactions == ("subject.biometrics.dna_profile", "subject.biometrics.facial_image")
    delivered = apply_redactions(alert(agencies=["US-FBI"], with_biometrics=True), d.redactions)
    bio = delivered["subject"]["biometrics"]
    assert bio["fingerprint_ref"] == "AFIS-X"
    assert bio["dna_profile"] is None
    assert bio["facial_image"] is None


def test_deny_mode_denies_instead_of_redacting() -> None:
    """With biometrics: deny, the uncleared recipient gets nothing; the cleared one everything."""
    result = route("Alert", alert(agencies=["BR-PF", "DE-BKA"], with_biometrics=True), biometrics="deny")
    assert decision(result, "BR-PF").outcome == "DENY"
    assert decision(result, "BR-PF").reason_code == R.BIOMETRIC_NOT_CLEARED
    assert decision(result, "DE-BKA").outcome == "DELIVER"
    no_deal = route("Alert", alert("FR-GN", agencies=["US-FBI"], data_categories=["FINGERPRINT"]),
                    biometrics="deny")
    assert decision(no_deal, "US-FBI").reason_code == R.NO_AGREEMENT
    assert decision(no_deal, "US-FBI").outcome == "DENY"


def test_declared_category_without_data_still_needs_clearance() -> None:
    """A category declared in the envelope counts even when the subject carries no values."""
    d = decision(route("Query", query(agencies=["BR-PF"], data_categories=["DNA"])), "BR-PF")
    assert (d.reason_code, d.redactions) == (R.BIOMETRIC_NOT_CLEARED, ("subject.biometrics.dna_profile",))


def test_undeclared_biometric_values_are_found() -> None:
    """Biometric values in the subject count even when the envelope does not declare them."""
    record = alert(agencies=["BR-PF"], with_biometrics=True, data_categories=["PERSONAL"])
    assert decision(route("Alert", record), "BR-PF").redactions == ("subject.biometrics",)


def test_non_biometric_categories_need_nothing() -> None:
    """PERSONAL, VEHICLE and the like are not gated by clearance."""
    record = query(agencies=["BR-PF"], data_categories=["PERSONAL", "VEHICLE"])
    assert decision(route("Query", record), "BR-PF").redactions == ()


def test_generic_biometric_category_removes_the_whole_record() -> None:
    """The BIOMETRIC category without its clearance removes all of subject.biometrics."""
    directory = Directory(
        agencies=[Agency("FR-PN", "x", clearances=ALL_BIO),
                  Agency("DE-BKA", "y", clearances=frozenset({"DNA", "FINGERPRINT", "FACIAL_IMAGE"}))],
        agreements=[Agreement("ALL", frozenset({"FR", "DE"}), ALL_BIO)],
    )
    record = alert(agencies=["DE-BKA"], with_biometrics=True, data_categories=["BIOMETRIC"])
    d = decision(route("Alert", record, directory=directory), "DE-BKA")
    assert d.redactions == ("subject.biometrics",)


def test_expired_agreement_no_longer_covers() -> None:
    """An agreement past its expiry is as good as none."""
    directory = Directory(
        agencies=[Agency("FR-PN", "x", clearances=ALL_BIO), Agency("DE-BKA", "y", clearances=ALL_BIO)],
        agreements=[Agreement("OLD", frozenset({"FR", "DE"}), ALL_BIO, expires_at=NOW + 10)],
    )
    record = alert(agencies=["DE-BKA"], with_biometrics=True)
    assert decision(route("Alert", record, directory=directory), "DE-BKA").redactions == ()
    late = decision(route("Alert", record, directory=directory, now=NOW + 10), "DE-BKA")
    assert (late.reason_code, late.redactions) == (R.NO_AGREEMENT, ("subject.biometrics",))


def test_reply_subject_biometrics_are_redacted_for_the_asker() -> None:
    """A reply's subject biometrics follow the same rule towards the asker."""
    state = MemoryState()
    asked = routed(state, "BR-PF", ["FR-PN"], query_kind="INFORMATION")
    record = reply("FR-PN", asked, with_subject=True)
    record["subject"]["biometrics"] = {"fingerprint_ref": "A", "fingerprints": b"F", "dna_profile": "D",
                                       "facial_image": b"I"}
    d = decision(route("Reply", record, state=state), "BR-PF")
    assert (d.outcome, d.redactions) == ("DELIVER", ("subject.biometrics",))


def test_denial_rules_come_before_redaction() -> None:
    """A restricted recipient is denied, not redacted."""
    record = alert(agencies=["BR-PF"], with_biometrics=True, restricted=["BR"])
    assert decision(route("Alert", record), "BR-PF").reason_code == R.RESTRICTED_BY_ORIGINATOR
