"""A sender learns only what it may know: case groups, concealed members, public reasons, notices."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from liaison.directory import Agency, Directory, Group
from liaison.policy import Decision, MemoryState, PolicyConfig, PolicyEngine, RoutingResult
from liaison.policy import reasons as R
from tests.unit.policy_fixtures import NOW, alert, codes, engine, outcomes, query, reply, routed
from tests.unit.test_policy_properties import SETTINGS, directories, messages, policies


def route(message_type: str, record: dict[str, Any], *, state: MemoryState | None = None,
          e: PolicyEngine | None = None, **policy: Any) -> RoutingResult:
    return (e or engine(**policy)).route(message_type, record, outbox_owner=record["envelope"]["originator"],
                                         now_ms=NOW, state=state or MemoryState())


def decision(result: RoutingResult, recipient: str) -> Decision:
    return next(d for d in result.decisions if d.recipient == recipient)


def public(result: RoutingResult) -> list[tuple[str, str, str | None, str | None]]:
    """What the sender's receipts show: recipient, outcome, public code and reason."""
    return [(d.recipient, d.outcome, d.public_code, d.public_reason) for d in result.sender_view]


# -- case groups: only members and hubs may address them ------------------------------------------
@pytest.mark.parametrize("group", ["JIT-A", "JIT-OLD"])
def test_a_non_member_gets_the_answer_of_an_unknown_group(group: str) -> None:
    """FR-GN is in neither case group: one denial, publicly the same as for a name that does not
    exist, live or expired; no member is reached or named."""
    result = route("Alert", alert("FR-GN", groups=[group]))
    unknown = route("Alert", alert("FR-GN", groups=["NO-SUCH-GROUP"]))
    assert codes(result) == {f"group:{group}": R.NOT_A_GROUP_MEMBER}
    assert result.delivered == ()
    assert [row[1:] for row in public(result)] == [row[1:] for row in public(unknown)]
    assert public(unknown)[0][2] == R.UNKNOWN_RECIPIENT
    assert public(result)[0][3] == R.REASONS[R.UNKNOWN_RECIPIENT]


def test_members_and_hubs_may_address_a_case_group() -> None:
    """A member reaches the others and sees them; a hub that is not a member does too."""
    member = route("Alert", alert("US-FBI", groups=["JIT-A"]))
    assert outcomes(member) == {"FR-PN": "DELIVER", "DE-BKA": "DELIVER"}
    assert member.concealed == ()
    assert all(d.concealed_via is None for d in member.decisions)
    hub = route("Alert", alert("INT-IPSG", groups=["JIT-A"]))
    assert outcomes(hub) == {"FR-PN": "DELIVER", "DE-BKA": "DELIVER", "US-FBI": "DELIVER"}
    assert all(d.concealed_via is None for d in hub.decisions)
    policy_hub = route("Alert", alert("FR-GN", groups=["JIT-A"]), hubs=frozenset({"FR-GN"}))
    assert set(policy_hub.delivered) == {"FR-PN", "DE-BKA", "US-FBI"}


def test_a_former_member_learns_that_the_group_expired() -> None:
    """Members of an expired case group get GROUP_EXPIRED; it is their own group."""
    result = route("Alert", alert("BR-PF", groups=["JIT-OLD"]))
    assert [row[2] for row in public(result)] == [R.GROUP_EXPIRED]


# -- receipts reveal no membership ------------------------------------------------------------------
def test_members_of_a_group_the_sender_is_not_in_are_concealed() -> None:
    """US-FBI is not in EU: every member's decision says so, and the sender's view is one receipt
    for the group, naming no member."""
    result = route("Alert", alert("US-FBI", groups=["EU"], tlp="GREEN"))
    assert set(outcomes(result)) == {"FR-PN", "FR-GN", "DE-BKA", "IT-PS"}
    assert {d.concealed_via for d in result.decisions} == {"EU"}
    assert decision(result, "IT-PS").reason_code == R.RECIPIENT_SUSPENDED  # the detail is kept
    assert public(result) == [("group:EU", "DELIVER", R.GROUP_ROUTED, R.REASONS[R.GROUP_ROUTED])]


def test_members_and_hubs_see_the_members_of_standing_groups() -> None:
    """FR-PN is in EU and INT-IPSG is a hub: nothing concealed, one receipt per member."""
    for sender in ("FR-PN", "INT-IPSG"):
        result = route("Alert", alert(sender, groups=["EU"]))
        assert result.concealed == ()
        assert all(d.concealed_via is None for d in result.decisions)
        assert [row[0] for row in public(result)] == [d.recipient for d in result.decisions]


def test_an_agency_the_sender_names_or_reaches_otherwise_is_not_concealed() -> None:
    """Named directly, through a group of the sender's own, or by broadcast: it has its receipt."""
    named = route("Alert", alert("US-FBI", groups=["EU"], agencies=["DE-BKA"]))
    assert decision(named, "DE-BKA").concealed_via is None
    assert decision(named, "FR-PN").concealed_via == "EU"
    both = route("Alert", alert("US-FBI", groups=["EU", "JIT-A"]))
    assert decision(both, "DE-BKA").concealed_via is None  # US-FBI is in JIT-A
    assert decision(both, "DE-BKA").rule == "default"
    assert decision(both, "FR-GN").concealed_via == "EU"
    broadcast = route("Alert", alert("US-FBI", groups=["EU"], broadcast=True, tlp="CLEAR"))
    assert decision(broadcast, "FR-GN").concealed_via is None
    assert decision(broadcast, "IT-PS").concealed_via == "EU"  # suspended: no broadcast reaches it


def test_a_concealed_group_via_is_never_shown_through_an_own_group() -> None:
    """Reached first through a concealed group and then through its own, the reason names its own."""
    directory = Directory(
        agencies=[Agency("FR-PN", "a", groups=frozenset({"ZONE"})),
                  Agency("DE-BKA", "b", groups=frozenset({"AREA", "ZONE"}))],
        groups=[Group("AREA"), Group("ZONE")])
    result = route("Alert", alert(groups=["AREA", "ZONE"], tlp="RED"), e=engine(directory))
    d = decision(result, "DE-BKA")
    assert d.concealed_via is None
    assert d.reason is not None
    assert "ZONE" in d.reason
    assert "AREA" not in d.reason


@pytest.mark.parametrize(("fields", "expected"), [
    ({"tlp": "RED"}, ("DENY", R.TLP_RED_NOT_NAMED)),
    ({"expires_at": NOW}, ("DENY", R.EXPIRED)),
    ({"kind": "NOTICE"}, ("HOLD", R.NOTICE_REVIEW)),
    ({"restricted": ["FR", "DE", "IT"]}, ("DELIVER", R.GROUP_ROUTED)),
    ({"with_biometrics": True}, ("DELIVER", R.GROUP_ROUTED)),
])
def test_the_group_receipt_depends_on_the_message_alone(fields: dict[str, Any],
                                                        expected: tuple[str, str]) -> None:
    """The group's receipt follows the sender's own terms, never the members' own outcomes: a
    `restricted` list that covers every member must not tell the sender so."""
    result = route("Alert", alert("US-FBI", groups=["EU"], **fields), biometrics="deny")
    (receipt,) = result.concealed
    assert (receipt.recipient, receipt.outcome, receipt.reason_code) == ("group:EU", *expected)


def test_a_reply_to_a_group_gets_one_group_receipt() -> None:
    """A reply addressed to a group: only the asker gets it, and the group's members stay hidden."""
    state = MemoryState()
    asked = routed(state, "DE-BKA", ["US-FBI"], query_kind="INFORMATION")
    result = route("Reply", reply("US-FBI", asked, groups=["EU"]), state=state)
    assert result.delivered == ("DE-BKA",)
    assert decision(result, "DE-BKA").concealed_via is None
    assert [(d.recipient, d.reason_code) for d in result.concealed] == [("group:EU", R.REPLY_NOT_TO_ASKER)]


@st.composite
def membership_variants(draw: st.DrawFn) -> tuple[Directory, Directory, PolicyConfig, str, dict[str, Any]]:
    """A directory, the same with other members in the groups the sender is not in, a message."""
    directory = draw(directories())
    config = draw(policies)
    message_type, record = draw(messages(directory))
    record["envelope"]["addressing"]["broadcast"] = False
    sender = record["envelope"]["originator"]
    if directory.agencies[sender].hub or sender in config.hubs:  # a hub sees every group
        return directory, directory, config, message_type, record
    own = directory.agencies[sender].groups
    others = sorted(set(directory.agencies) - {sender})
    agencies = [a if a.code == sender else Agency(
        a.code, a.name, groups=(a.groups & own) | draw(st.sets(st.sampled_from(["G1", "G2"]))) - own,
        hub=a.hub, status=a.status, clearances=a.clearances) for a in directory.agencies.values()]
    groups = []
    for group in directory.groups.values():
        if group.kind == "CASE" and sender not in group.members and others:
            members = frozenset(draw(st.sets(st.sampled_from(others), min_size=1)))
            group = Group(group.name, "CASE", members=members, expires_at=group.expires_at)  # noqa: PLW2901  # the variant replaces it
        groups.append(group)
    return directory, Directory(agencies, groups, directory.agreements.values()), config, message_type, record


@SETTINGS
@given(membership_variants())
def test_the_senders_view_does_not_depend_on_groups_it_is_not_in(
        case: tuple[Directory, Directory, PolicyConfig, str, dict[str, Any]]) -> None:
    """Whoever is in the groups the sender does not belong to, its receipts are the same."""
    before, after, config, message_type, record = case
    views = []
    for directory in (before, after):
        result = route(message_type, record, e=PolicyEngine(config, directory))
        views.append((result.rejection, public(result)))
    assert views[0] == views[1]


# -- general reasons for the sender, detail for the audit -------------------------------------------
OWN = frozenset({
    R.UNKNOWN_TYPE, R.INVALID, R.SPOOFED_ORIGINATOR, R.UNKNOWN_ORIGINATOR, R.ORIGINATOR_SUSPENDED,
    R.REPLY_WITHOUT_CORRELATION, R.REFUSAL_WITHOUT_GROUND, R.OUTCOME_NOT_ALLOWED, R.URGENT_WITHOUT_GROUND,
    R.CONSENT_WITHOUT_SOURCE, R.GROUP_EXPIRED, R.EXPIRED, R.RESTRICTED_BY_ORIGINATOR, R.REPLY_NOT_TO_ASKER,
    R.PERSONAL_DATA_IN_HIT_CHECK, R.TLP_RED_NOT_NAMED, R.TLP_AMBER_NOT_NAMED, R.TLP_AMBER_BROADCAST,
    R.TLP_GREEN_BROADCAST, R.UNKNOWN_SOURCE, R.NOTICE_REVIEW, R.NEUTRALITY_REVIEW, R.FOR_REVIEW,
    R.NOTICE_BEYOND_TLP,
    # case-based cooperation: the sender's own delegation, group, match or copies
    R.OFFICER_NOT_IN_FORCE, R.OUTSIDE_DELEGATION, R.COPY_MARK_BY_SENDER, R.CASE_GROUP_REFUSED,
    R.MATCH_CONFIRMATION_INVALID, R.LATE_MEMBER_NO_CONSENT, R.MATCH_REJECTED, R.MATCH_NOT_CONFIRMED,
    R.SPOC_COPY_ART_4_1, R.SPOC_COPY_ART_8, R.OFFICER_COPY, R.SPOC_COPY_WAIVED, R.MATCH_PENDING,
    R.MATCH_CONFIRMED, R.CASE_GROUP_PROPOSED, R.CASE_GROUP_INVITED, R.CASE_GROUP_JOINED,
    R.CASE_GROUP_DECLINED, R.CASE_GROUP_REMOVED, R.CASE_GROUP_EXTENDED, R.CASE_GROUP_CLOSED,
    R.CASE_GROUP_ENDED,
})
"""Codes shown to the sender as they are: about its own message, or the general ones themselves."""
GENERAL = frozenset({R.NOT_DELIVERABLE, R.FIELDS_REMOVED, R.GROUP_ROUTED})


def test_every_code_is_either_public_or_mapped() -> None:
    """A new code must be placed: shown as it is (OWN) or given a public view in reasons.PUBLIC."""
    assert set(R.REASONS) == OWN | set(R.PUBLIC) | GENERAL
    assert not OWN & set(R.PUBLIC)
    assert set(R.PUBLIC.values()) <= set(R.REASONS)
    assert all(R.PUBLIC.get(v, v) == v for v in R.PUBLIC.values())  # a public code is final


@pytest.mark.parametrize(("record", "recipient", "detail"), [
    (alert(agencies=["IT-PS"]), "IT-PS", R.RECIPIENT_SUSPENDED),
    (alert(agencies=["BR-PF"], with_biometrics=True), "BR-PF", R.BIOMETRIC_NOT_CLEARED),
    (alert("FR-GN", agencies=["US-FBI"], data_categories=["FINGERPRINT"]), "US-FBI", R.NO_AGREEMENT),
])
def test_a_third_agencys_state_is_not_deliverable_to_the_sender(record: dict[str, Any], recipient: str,
                                                                 detail: str) -> None:
    """Suspension, clearance and agreements show as NOT_DELIVERABLE; the audit keeps the detail."""
    d = decision(route("Alert", record, biometrics="deny"), recipient)
    assert (d.outcome, d.reason_code, d.public_code) == ("DENY", detail, R.NOT_DELIVERABLE)
    assert d.public_reason == R.REASONS[R.NOT_DELIVERABLE]
    assert d.reason is not None
    assert recipient in d.reason


def test_a_redacted_copy_shows_a_general_note() -> None:
    """Removed fields: FIELDS_REMOVED, without clearances, agreements or the paths removed."""
    uncleared = alert(agencies=["BR-PF"], with_biometrics=True)
    unagreed = alert("FR-GN", agencies=["US-FBI"], data_categories=["FINGERPRINT"])
    for record, recipient in ((uncleared, "BR-PF"), (unagreed, "US-FBI")):
        d = decision(route("Alert", record), recipient)
        assert d.outcome == "DELIVER"
        assert d.reason_code in R.REDACTIONS
        assert d.public_code == R.FIELDS_REMOVED
        text = d.public_reason or ""
        assert text == R.REASONS[R.FIELDS_REMOVED]
        assert not any(word in text for word in ("clearance", "agreement", "biometrics", recipient))


def test_codes_about_the_senders_own_message_stay_as_they_are() -> None:
    """TLP, restrictions and expiry are the sender's own terms: code and reason unchanged."""
    result = route("Alert", alert(tlp="RED", groups=["EU"], agencies=["US-FBI", "BR-PF"], restricted=["BR"]))
    for recipient, code in (("DE-BKA", R.TLP_RED_NOT_NAMED), ("BR-PF", R.RESTRICTED_BY_ORIGINATOR)):
        d = decision(result, recipient)
        assert (d.reason_code, d.public_code, d.public_reason) == (code, code, d.reason)
    plain = decision(result, "US-FBI")
    assert (plain.public_code, plain.public_reason) == (None, None)
    expired = decision(route("Query", query(agencies=["DE-BKA"], expires_at=NOW)), "DE-BKA")
    assert (expired.public_code, expired.public_reason) == (R.EXPIRED, expired.reason)


def test_h2_denials_do_not_name_the_provider() -> None:
    """The detail names the provider whose consent is missing; the sender's view does not."""
    state = MemoryState()
    source = routed(state, "DE-BKA", ["FR-PN"], handling=["H2"])
    d = decision(route("Alert", alert(agencies=["US-FBI"], derived_from=source), state=state), "US-FBI")
    assert "DE-BKA" in (d.reason or "")
    assert (d.public_code, d.public_reason) == (R.NO_CONSENT_FOR_H2, R.REASONS[R.NO_CONSENT_FOR_H2])


# -- notices honour the terms of the message they are about -----------------------------------------
@pytest.mark.parametrize(("recipient", "terms", "code"), [
    ("DE-BKA", {}, None),
    ("GB-NCA", {}, R.UNKNOWN_RECIPIENT),
    ("IT-PS", {}, R.RECIPIENT_SUSPENDED),
    ("DE-BKA", {"restricted": ["DE-BKA"]}, R.RESTRICTED_BY_ORIGINATOR),
    ("DE-BKA", {"restricted": ["de"]}, R.RESTRICTED_BY_ORIGINATOR),
    ("DE-BKA", {"tlp": "RED"}, R.NOTICE_BEYOND_TLP),
    ("DE-BKA", {"tlp": "AMBER_STRICT"}, R.NOTICE_BEYOND_TLP),
    ("DE-BKA", {"tlp": "PURPLE"}, R.NOTICE_BEYOND_TLP),
    ("DE-BKA", {"tlp": "AMBER"}, None),
    ("DE-BKA", {"tlp": None}, None),
    ("DE-BKA", {"tlp": "GREEN"}, None),
    ("DE-BKA", {"tlp": "CLEAR"}, None),
    ("DE-BKA", {"tlp": "RED", "received": ["DE-BKA"]}, None),
    ("DE-BKA", {"tlp": "RED", "received": ["DE-BKA"], "restricted": ["DE"]}, R.RESTRICTED_BY_ORIGINATOR),
])
def test_notice_allowed(recipient: str, terms: dict[str, Any], code: str | None) -> None:
    """Unknown, suspended, restricted (code or country) or beyond the TLP label: no notice."""
    e = engine()
    d = e.notice_decision(recipient, **terms)
    assert (d.recipient, d.reason_code) == (recipient, code)
    assert d.outcome == ("DELIVER" if code is None else "DENY")
    assert e.notice_allowed(recipient, **terms) is (code is None)


def test_amber_notices_follow_the_policy_reach() -> None:
    """With tlp.amber: named, AMBER notices reach only agencies that received the message."""
    e = engine(amber_reach="named")
    assert not e.notice_allowed("DE-BKA", tlp="AMBER")
    assert e.notice_allowed("DE-BKA", tlp="AMBER", received={"DE-BKA"})
    assert e.notice_allowed("DE-BKA", tlp="GREEN")


@pytest.mark.parametrize(("fields", "told"), [
    ({}, ("INT-IPSG",)),
    ({"tlp": "GREEN"}, ("INT-IPSG",)),
    ({"tlp": "AMBER_STRICT"}, ()),
    ({"tlp": "RED"}, ()),
    ({"restricted": ["INT"]}, ()),
])
def test_hub_notices_of_replies_honour_the_replys_terms(fields: dict[str, Any],
                                                        told: tuple[str, ...]) -> None:
    """A FLAG on an alert is reported to the hub only as far as the reply's TLP and restrictions allow."""
    state = MemoryState()
    asked = routed(state, "DE-BKA", ["FR-PN"])
    result = route("Reply", reply("FR-PN", asked, outcome="FLAG", **fields), state=state)
    assert outcomes(result) == {"DE-BKA": "DELIVER"}
    assert result.notify_hub == told


def test_a_hub_that_received_a_held_alert_is_told_whatever_its_tlp() -> None:
    """The hub's review copy of a RED notice reaches it, and so does the notice that it is held."""
    result = route("Alert", alert(kind="NOTICE", tlp="RED", agencies=["DE-BKA"]))
    assert outcomes(result)["INT-IPSG"] == "DELIVER"
    assert result.notify_hub == ("INT-IPSG",)
