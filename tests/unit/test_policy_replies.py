"""Replies go only to the asker; H2 information needs consent to be passed on."""

from __future__ import annotations

from typing import Any

import pytest

from liaison.policy import MemoryState, RoutingResult
from liaison.policy import reasons as R
from tests.unit.policy_fixtures import NOW, alert, codes, engine, outcomes, query, reply, routed


def route(message_type: str, record: dict[str, Any], state: MemoryState, **policy: Any) -> RoutingResult:
    return engine(**policy).route(message_type, record, outbox_owner=record["envelope"]["originator"],
                                  now_ms=NOW, state=state)


@pytest.fixture
def state() -> MemoryState:
    return MemoryState()


# -- replies --------------------------------------------------------------------------------------
def test_reply_reaches_the_asker_without_addressing(state: MemoryState) -> None:
    """A reply with empty addressing is delivered to the originator of the answered query."""
    asked = routed(state, "DE-BKA", ["FR-PN", "US-FBI"], query_kind="INFORMATION")
    result = route("Reply", reply("FR-PN", asked), state)
    assert outcomes(result) == {"DE-BKA": "DELIVER"}
    assert result.decisions[0].rule == "default"


def test_reply_to_anyone_else_is_denied(state: MemoryState) -> None:
    """Other addressees of a reply are denied REPLY_NOT_TO_ASKER."""
    asked = routed(state, "DE-BKA", ["FR-PN", "US-FBI"], query_kind="INFORMATION")
    result = route("Reply", reply("FR-PN", asked, agencies=["DE-BKA", "US-FBI"], groups=["EU"]), state)
    assert codes(result) == {"DE-BKA": None, "US-FBI": R.REPLY_NOT_TO_ASKER, "FR-GN": R.REPLY_NOT_TO_ASKER,
                             "IT-PS": R.REPLY_NOT_TO_ASKER}


def test_reply_needs_a_correlation_id(state: MemoryState) -> None:
    """No correlation_id: the reply is rejected."""
    result = route("Reply", reply("FR-PN", None, agencies=["DE-BKA"]), state)  # type: ignore[arg-type]
    assert result.rejection is not None
    assert result.rejection.code == R.REPLY_WITHOUT_CORRELATION


def test_reply_to_an_unknown_message_is_rejected(state: MemoryState) -> None:
    """The answered message must have been routed."""
    result = route("Reply", reply("FR-PN", "00000000-0000-0000-0000-000000000000"), state)
    assert result.rejection is not None
    assert result.rejection.code == R.UNKNOWN_CORRELATION


def test_replier_must_have_received_the_message(state: MemoryState) -> None:
    """Only a recipient of the answered message may answer it: the whole reply is refused."""
    asked = routed(state, "DE-BKA", ["US-FBI"], query_kind="INFORMATION")
    for _ in range(2):
        result = route("Reply", reply("FR-PN", asked), state)
        assert result.decisions == ()
        assert result.rejection is not None
        assert result.rejection.code == R.NOT_A_RECIPIENT
        state.delivered.pop(asked, None)  # then: nothing known of its recipients


def test_a_non_recipient_replier_learns_nothing_about_the_message(state: MemoryState) -> None:
    """To a replier that never received it, a routed message answers as one never routed: no
    asker named, no kind revealed (even with an outcome that does not fit it), no recipient."""
    asked = routed(state, "DE-BKA", ["US-FBI"], query_kind="HIT_CHECK")
    unknown = route("Reply", reply("FR-PN", "00000000-0000-0000-0000-000000000000"), state).rejection
    assert unknown is not None
    for outcome in ("HIT", "GRANTED", "FLAG"):
        result = route("Reply", reply("FR-PN", asked, outcome=outcome), state)
        assert result.decisions == ()
        refused = result.rejection
        assert refused is not None
        assert refused.code == R.NOT_A_RECIPIENT  # the detail, for the dead letter
        assert "DE-BKA" in refused.reason
        assert (refused.public_code, refused.public_reason) == (unknown.public_code, unknown.public_reason)
        assert refused.public_code == R.UNKNOWN_CORRELATION
        assert "DE-BKA" not in refused.public_reason
        assert "HIT_CHECK" not in refused.public_reason


def test_refused_reply_needs_a_ground(state: MemoryState) -> None:
    """REFUSED without refusal_ground is rejected; with one it is delivered."""
    asked = routed(state, "DE-BKA", ["FR-PN"], query_kind="INFORMATION")
    bad = route("Reply", reply("FR-PN", asked, outcome="REFUSED"), state)
    assert bad.rejection is not None
    assert bad.rejection.code == R.REFUSAL_WITHOUT_GROUND
    good = route("Reply", reply("FR-PN", asked, outcome="REFUSED", refusal_ground="NOT_AVAILABLE"), state)
    assert outcomes(good) == {"DE-BKA": "DELIVER"}


@pytest.mark.parametrize(("kind", "outcome", "allowed"), [
    ("HIT_CHECK", "HIT", True), ("HIT_CHECK", "NO_HIT", True), ("HIT_CHECK", "PARTIAL", False),
    ("CONSENT", "GRANTED", True), ("CONSENT", "HIT", False), ("INFORMATION", "GRANTED", False),
    ("INFORMATION", "FLAG", False), ("INFORMATION", "PARTIAL", True), (None, "FLAG", True),
    (None, "GRANTED", False),
])
def test_outcome_must_fit_the_question(state: MemoryState, kind: str | None, outcome: str,
                                       allowed: bool) -> None:
    """HIT_CHECK takes HIT/NO_HIT, CONSENT takes GRANTED/REFUSED, FLAG answers only alerts."""
    asked = routed(state, "DE-BKA", ["FR-PN"], query_kind=kind)
    result = route("Reply", reply("FR-PN", asked, outcome=outcome), state)
    if allowed:
        assert result.rejection is None
    else:
        assert result.rejection is not None
        assert result.rejection.code == R.OUTCOME_NOT_ALLOWED


@pytest.mark.parametrize("content", [{"with_subject": True}, {"information": "his address is ..."}])
def test_hit_check_reply_carries_no_personal_data(state: MemoryState, content: dict[str, Any]) -> None:
    """A reply to a HIT_CHECK with subject data or free text is denied."""
    asked = routed(state, "DE-BKA", ["FR-PN"], query_kind="HIT_CHECK")
    result = route("Reply", reply("FR-PN", asked, **content), state)
    assert codes(result) == {"DE-BKA": R.PERSONAL_DATA_IN_HIT_CHECK}


def test_hit_check_reply_with_a_location_is_denied(state: MemoryState) -> None:
    """A location is content too."""
    asked = routed(state, "DE-BKA", ["FR-PN"], query_kind="HIT_CHECK")
    record = reply("FR-PN", asked)
    record["location"] = "Lyon"
    assert codes(route("Reply", record, state)) == {"DE-BKA": R.PERSONAL_DATA_IN_HIT_CHECK}


def test_clean_hit_check_reply_is_delivered(state: MemoryState) -> None:
    """HIT with a reference only is delivered; other queries may carry data."""
    asked = routed(state, "DE-BKA", ["FR-PN"], query_kind="HIT_CHECK")
    assert outcomes(route("Reply", reply("FR-PN", asked), state)) == {"DE-BKA": "DELIVER"}
    info = routed(state, "DE-BKA", ["FR-PN"], query_kind="INFORMATION")
    assert outcomes(route("Reply", reply("FR-PN", info, with_subject=True), state)) == {"DE-BKA": "DELIVER"}


@pytest.mark.parametrize("outcome", ["FLAG", "HIT"])
def test_flag_and_hit_on_an_alert_notify_the_hub(state: MemoryState, outcome: str) -> None:
    """The hub hears of flags and sightings on alerts."""
    asked = routed(state, "DE-BKA", ["FR-PN"])
    result = route("Reply", reply("FR-PN", asked, outcome=outcome), state)
    assert outcomes(result) == {"DE-BKA": "DELIVER"}
    assert result.notify_hub == ("INT-IPSG",)


def test_other_replies_do_not_notify_the_hub(state: MemoryState) -> None:
    """NO_HIT on an alert, a HIT on a query, a denied FLAG, a hub's own FLAG: no notification."""
    alerted = routed(state, "DE-BKA", ["FR-PN", "INT-IPSG"])
    assert route("Reply", reply("FR-PN", alerted, outcome="NO_HIT"), state).notify_hub == ()
    asked = routed(state, "DE-BKA", ["FR-PN"], query_kind="INFORMATION")
    assert route("Reply", reply("FR-PN", asked, outcome="HIT"), state).notify_hub == ()
    stranger = routed(state, "DE-BKA", ["US-FBI"])
    assert route("Reply", reply("FR-PN", stranger, outcome="FLAG"), state).notify_hub == ()
    assert route("Reply", reply("INT-IPSG", alerted, outcome="FLAG"), state).notify_hub == ()


def test_reply_to_the_hubs_alert_does_not_notify_it_twice(state: MemoryState) -> None:
    """The asker already receives the reply."""
    asked = routed(state, "INT-IPSG", ["FR-PN"])
    result = route("Reply", reply("FR-PN", asked, outcome="FLAG"), state)
    assert outcomes(result) == {"INT-IPSG": "DELIVER"}
    assert result.notify_hub == ()


# -- onward sharing (H2) ---------------------------------------------------------------------------
def test_h2_information_needs_consent_to_be_passed_on(state: MemoryState) -> None:
    """Passing on DE-BKA's H2 message without consent is denied to all but DE-BKA."""
    source = routed(state, "DE-BKA", ["FR-PN"], handling=["H0", "H2"])
    result = route("Alert", alert(agencies=["US-FBI", "DE-BKA"], derived_from=source), state)
    assert codes(result) == {"US-FBI": R.NO_CONSENT_FOR_H2, "DE-BKA": None}


def test_h2_with_consent_is_passed_on(state: MemoryState) -> None:
    """With the provider's recorded consent for this sender, it goes out."""
    source = routed(state, "DE-BKA", ["FR-PN"], handling=["H2"])
    state.add_consent(source, "FR-PN")
    assert outcomes(route("Query", query(agencies=["US-FBI"], derived_from=source), state)) == {
        "US-FBI": "DELIVER"}
    other = routed(state, "DE-BKA", ["FR-GN"], handling=["H2"])
    state.add_consent(other, "FR-GN")  # consent given to someone else does not count
    assert codes(route("Query", query(agencies=["US-FBI"], derived_from=other), state)) == {
        "US-FBI": R.NO_CONSENT_FOR_H2}


def test_without_h2_or_from_oneself_no_consent_is_needed(state: MemoryState) -> None:
    """H0/H1/H3 information, or the sender's own H2 information, may be passed on."""
    plain = routed(state, "DE-BKA", ["FR-PN"], handling=["H0", "H1", "H3"])
    assert outcomes(route("Alert", alert(agencies=["US-FBI"], derived_from=plain), state)) == {
        "US-FBI": "DELIVER"}
    own = routed(state, "FR-PN", ["DE-BKA"], handling=["H2"])
    assert outcomes(route("Alert", alert(agencies=["US-FBI"], derived_from=own), state)) == {
        "US-FBI": "DELIVER"}


def test_consent_query_always_reaches_the_provider(state: MemoryState) -> None:
    """A CONSENT query asks the provider itself; nobody else gets it before consent."""
    source = routed(state, "DE-BKA", ["FR-PN"], handling=["H2"])
    record = query(kind="CONSENT", agencies=["DE-BKA", "US-FBI"], derived_from=source, tlp="RED")
    assert codes(route("Query", record, state)) == {"DE-BKA": None, "US-FBI": R.NO_CONSENT_FOR_H2}


def test_consent_round_trip_through_memory_state(state: MemoryState) -> None:
    """A GRANTED reply to a CONSENT query records consent, which then lets the message through."""
    e = engine()
    source = routed(state, "DE-BKA", ["FR-PN"], handling=["H2"])
    ask = query(kind="CONSENT", agencies=["DE-BKA"], derived_from=source)
    state.observe("Query", ask, e.route("Query", ask, outbox_owner="FR-PN", now_ms=NOW, state=state))
    grant = reply("DE-BKA", ask["envelope"]["message_id"], outcome="GRANTED")
    state.observe("Reply", grant, e.route("Reply", grant, outbox_owner="DE-BKA", now_ms=NOW, state=state))
    assert state.has_consent(source, "FR-PN")
    passed = alert(agencies=["US-FBI"], derived_from=source)
    assert outcomes(e.route("Alert", passed, outbox_owner="FR-PN", now_ms=NOW, state=state)) == {
        "US-FBI": "DELIVER"}


def test_unknown_source_is_allowed_or_denied_by_policy(state: MemoryState) -> None:
    """derived_from naming a message the bus never saw: allowed by default, UNKNOWN_SOURCE if denied."""
    record = alert(agencies=["US-FBI"], derived_from="11111111-1111-1111-1111-111111111111")
    assert outcomes(route("Alert", record, state)) == {"US-FBI": "DELIVER"}
    assert codes(route("Alert", record, state, unknown_source="deny")) == {"US-FBI": R.UNKNOWN_SOURCE}
