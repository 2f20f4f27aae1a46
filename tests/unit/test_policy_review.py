"""Notices held for the hub's review, diffusions sent directly, neutrality holds."""

from __future__ import annotations

from typing import Any

from liaison.policy import MemoryState, RoutingResult
from liaison.policy import reasons as R
from tests.unit.policy_fixtures import NOW, alert, codes, engine, outcomes


def route(record: dict[str, Any], **policy: Any) -> RoutingResult:
    return engine(**policy).route("Alert", record, outbox_owner=record["envelope"]["originator"], now_ms=NOW,
                                  state=MemoryState())


def test_notice_from_non_hub_is_held_and_sent_to_the_hub() -> None:
    """Recipients are held with NOTICE_REVIEW; the hub gets it FOR_REVIEW and is notified."""
    result = route(alert(kind="NOTICE", agencies=["DE-BKA", "US-FBI"]))
    assert codes(result) == {"DE-BKA": R.NOTICE_REVIEW, "US-FBI": R.NOTICE_REVIEW, "INT-IPSG": R.FOR_REVIEW}
    assert outcomes(result) == {"DE-BKA": "HOLD", "US-FBI": "HOLD", "INT-IPSG": "DELIVER"}
    assert result.notify_hub == ("INT-IPSG",)


def test_notice_from_the_hub_goes_straight_out() -> None:
    """The hub's own notices need no review."""
    result = route(alert("INT-IPSG", kind="NOTICE", agencies=["DE-BKA", "US-FBI"]))
    assert outcomes(result) == {"DE-BKA": "DELIVER", "US-FBI": "DELIVER"}
    assert result.notify_hub == ()


def test_policy_hub_sends_notices_directly_and_reviews_others() -> None:
    """An agency the policy names as hub is treated as one."""
    own = route(alert("DE-BKA", kind="NOTICE", agencies=["US-FBI"]), hubs=frozenset({"DE-BKA"}))
    assert outcomes(own) == {"US-FBI": "DELIVER"}
    other = route(alert(kind="NOTICE", agencies=["US-FBI"]), hubs=frozenset({"DE-BKA"}))
    assert codes(other) == {"US-FBI": R.NOTICE_REVIEW, "DE-BKA": R.FOR_REVIEW, "INT-IPSG": R.FOR_REVIEW}
    assert other.notify_hub == ("DE-BKA", "INT-IPSG")


def test_diffusion_goes_straight_to_its_addressees() -> None:
    """A diffusion is not held."""
    result = route(alert(kind="DIFFUSION", agencies=["DE-BKA"]))
    assert outcomes(result) == {"DE-BKA": "DELIVER"}
    assert result.notify_hub == ()


def test_notice_review_can_be_switched_off() -> None:
    """With review.notices false, notices go straight out."""
    result = route(alert(kind="NOTICE", agencies=["DE-BKA"]), notice_review=False)
    assert outcomes(result) == {"DE-BKA": "DELIVER"}


def test_hub_review_copy_is_not_limited_by_tlp() -> None:
    """A RED notice named to one agency still reaches the hub for review."""
    result = route(alert(kind="NOTICE", tlp="RED", agencies=["DE-BKA"]))
    assert outcomes(result) == {"DE-BKA": "HOLD", "INT-IPSG": "DELIVER"}


def test_hub_review_copy_obeys_restrictions_and_biometrics() -> None:
    """A restricted hub gets no copy and no notification; an uncovered hub copy is redacted."""
    restricted = route(alert(kind="NOTICE", agencies=["DE-BKA"], restricted=["INT"]))
    assert codes(restricted)["INT-IPSG"] == R.RESTRICTED_BY_ORIGINATOR
    assert restricted.notify_hub == ()
    bio = route(alert("FR-GN", kind="NOTICE", agencies=["DE-BKA"], with_biometrics=True))
    hub = next(d for d in bio.decisions if d.recipient == "INT-IPSG")
    assert hub.outcome == "DELIVER"  # FR-GN is covered by the hub agreement through its country
    assert hub.redactions == ()


def test_review_copy_redacted_keeps_both_notes() -> None:
    """A hub copy that is also redacted says so, with the redaction's code."""
    result = route(alert("US-FBI", kind="NOTICE", agencies=["DE-BKA"], with_biometrics=True),
                   hubs=frozenset({"BR-PF"}))
    brazil = next(d for d in result.decisions if d.recipient == "BR-PF")
    assert brazil.outcome == "DELIVER"
    assert brazil.reason_code == R.BIOMETRIC_NOT_CLEARED
    assert brazil.redactions == ("subject.biometrics",)
    assert brazil.reason is not None
    assert "review" in brazil.reason


def test_neutrality_tag_holds_every_recipient() -> None:
    """A tagged alert is held for every recipient, the hub reviews it and is told."""
    result = route(alert(kind="DIFFUSION", agencies=["DE-BKA"], groups=["JIT-A"], sensitivity=["POLITICAL"]))
    assert codes(result) == {"DE-BKA": R.NEUTRALITY_REVIEW, "US-FBI": R.NEUTRALITY_REVIEW,
                             "INT-IPSG": R.FOR_REVIEW}
    assert result.notify_hub == ("INT-IPSG",)


def test_neutrality_wins_over_notice_review() -> None:
    """A tagged notice is held for neutrality."""
    result = route(alert(kind="NOTICE", agencies=["DE-BKA"], sensitivity=["RELIGIOUS"]))
    assert codes(result)["DE-BKA"] == R.NEUTRALITY_REVIEW


def test_neutrality_holds_even_the_hubs_own_alerts() -> None:
    """Article 3 binds the hub too; it is not notified of its own alert."""
    result = route(alert("INT-IPSG", kind="NOTICE", agencies=["DE-BKA"], sensitivity=["MILITARY"]))
    assert codes(result) == {"DE-BKA": R.NEUTRALITY_REVIEW}
    assert result.notify_hub == ()


def test_untagged_alert_is_not_held_and_review_can_be_off() -> None:
    """No tag, no hold; review.neutrality false lets tagged alerts through."""
    assert outcomes(route(alert(agencies=["DE-BKA"]))) == {"DE-BKA": "DELIVER"}
    off = route(alert(agencies=["DE-BKA"], sensitivity=["RACIAL"]), neutrality_review=False)
    assert outcomes(off) == {"DE-BKA": "DELIVER"}


def test_denials_win_over_holds() -> None:
    """A recipient that a deny rule covers is denied, not held."""
    result = route(alert(kind="NOTICE", agencies=["DE-BKA", "IT-PS"], restricted=["DE"]))
    assert codes(result) == {"DE-BKA": R.RESTRICTED_BY_ORIGINATOR, "IT-PS": R.RECIPIENT_SUSPENDED,
                             "INT-IPSG": R.FOR_REVIEW}
