"""Case-based cooperation in the policy engine: SPOC copies, liaison officers, case groups formed on
the bus, human confirmation of biometric hits. Each rule on both sides: what it lets through and
what it stops."""

from __future__ import annotations

from typing import Any

import pytest

from liaison.case_groups import CaseGroup
from liaison.directory import Agency, Directory, Officer
from liaison.policy import MemoryState, PolicyConfig, compile_policy
from liaison.policy import reasons as R
from liaison.policy.model import match_key
from tests.unit.policy_fixtures import NOW, codes, new_id, outcomes, query, reply, routed

DAY = 86_400_000


def casework_directory(*, officer_status: str = "ACTIVE", officer_ends: int = NOW + 30 * DAY) -> Directory:
    """Three EU states with a SPOC each, designated and other competent authorities; a state outside
    the Directive (no SPOC); FR-PN's liaison officer in Bogota."""
    return Directory(agencies=[
        Agency("FR-SPOC", "SPOC France", spoc=True),
        Agency("FR-PN", "Police nationale", designated=True),
        Agency("FR-GN", "Gendarmerie nationale"),
        Agency("DE-SPOC", "SPOC Germany", spoc=True),
        Agency("DE-BKA", "Bundeskriminalamt", designated=True),
        Agency("DE-LKA", "Landeskriminalamt"),
        Agency("ES-SPOC", "SPOC Spain", spoc=True),
        Agency("ES-CNP", "Policia Nacional"),
        Agency("CO-DIJIN", "DIJIN Colombia"),
        Agency("US-FBI", "FBI"),
    ], officers=[
        Officer("FR-PN-BOGOTA", "FR-PN", post="Bogota, Colombia", cases=frozenset({"OP-CONDOR"}),
                countries=frozenset({"CO"}), starts_at=NOW - DAY, ends_at=officer_ends,
                status=officer_status),
    ])


def route(message_type: str, record: dict[str, Any], *, state: MemoryState | None = None,
          owner: str | None = None, directory: Directory | None = None) -> Any:
    engine = compile_policy(PolicyConfig(), directory or casework_directory())
    return engine.route(message_type, record, outbox_owner=owner or record["envelope"]["originator"],
                        now_ms=NOW, state=state or MemoryState())


def copies(result: Any) -> dict[str, tuple[str, str] | None]:
    return {d.recipient: d.copy for d in result.decisions}


# -- SPOC copies (Directive 2023/977 Art. 4(1), 4(2), 8) ---------------------------------------------
def test_a_designated_authoritys_request_to_another_spoc_is_copied_to_its_own_spoc() -> None:
    result = route("Query", query("FR-PN", agencies=["DE-SPOC"]))
    assert outcomes(result) == {"DE-SPOC": "DELIVER", "FR-SPOC": "DELIVER"}
    assert copies(result) == {"DE-SPOC": None, "FR-SPOC": ("SPOC_OWN", "DE-SPOC")}
    assert codes(result)["FR-SPOC"] == R.SPOC_COPY_ART_4_1


def test_the_art_4_2_ground_skips_the_copy_and_is_kept_for_the_audit() -> None:
    result = route("Query", query("FR-PN", agencies=["DE-SPOC"],
                                  spoc_copy_waiver="TERRORISM_WITHOUT_EMERGENCY"))
    assert outcomes(result) == {"DE-SPOC": "DELIVER"}
    assert [(d.recipient, d.reason_code) for d in result.waived] == [("FR-SPOC", R.SPOC_COPY_WAIVED)]
    assert "TERRORISM_WITHOUT_EMERGENCY" in (result.waived[0].reason or "")
    assert "4(2)" in (result.waived[0].reason or "")


def test_a_direct_request_between_competent_authorities_is_copied_to_both_spocs() -> None:
    result = route("Query", query("FR-GN", agencies=["DE-LKA"]))
    assert copies(result) == {"DE-LKA": None, "FR-SPOC": ("SPOC_OWN", "DE-LKA"),
                              "DE-SPOC": ("SPOC_OTHER", "DE-LKA")}
    assert {codes(result)[s] for s in ("FR-SPOC", "DE-SPOC")} == {R.SPOC_COPY_ART_8}


def test_a_spocs_direct_request_is_copied_to_the_other_states_spoc_only() -> None:
    result = route("Query", query("FR-SPOC", agencies=["DE-LKA"]))
    assert copies(result) == {"DE-LKA": None, "DE-SPOC": ("SPOC_OTHER", "DE-LKA")}


def test_the_answer_of_a_competent_authority_is_copied_under_art_8() -> None:
    state = MemoryState()
    asked = routed(state, "FR-GN", ["DE-LKA"], query_kind="INFORMATION")
    result = route("Reply", reply("DE-LKA", asked, outcome="NO_HIT", information="Not known."), state=state)
    assert copies(result) == {"FR-GN": None, "DE-SPOC": ("SPOC_OWN", "FR-GN"), "FR-SPOC": ("SPOC_OTHER",
                                                                                           "FR-GN")}
    assert outcomes(result) == dict.fromkeys(("FR-GN", "DE-SPOC", "FR-SPOC"), "DELIVER")


@pytest.mark.parametrize(("sender", "to"), [
    ("FR-PN", ["FR-GN"]),  # within one state
    ("FR-PN", ["CO-DIJIN"]),  # a state outside the Directive (no SPOC)
    ("FR-GN", ["DE-SPOC"]),  # not a designated authority: no Art. 4(1) copy
    ("FR-SPOC", ["DE-SPOC"]),  # SPOC to SPOC
])
def test_no_copy_where_the_directive_asks_for_none(sender: str, to: list[str]) -> None:
    result = route("Query", query(sender, agencies=to))
    assert set(outcomes(result)) == set(to)
    assert not result.waived


def test_no_copy_of_a_hit_check_or_to_a_spoc_that_gets_the_message_itself() -> None:
    assert set(outcomes(route("Query", query("FR-GN", agencies=["DE-LKA"], kind="HIT_CHECK")))) == {"DE-LKA"}
    both = route("Query", query("FR-GN", agencies=["DE-LKA", "FR-SPOC"]))
    assert copies(both) == {"DE-LKA": None, "FR-SPOC": None, "DE-SPOC": ("SPOC_OTHER", "DE-LKA")}


def test_a_copy_still_obeys_the_senders_restrictions() -> None:
    result = route("Query", query("FR-GN", agencies=["DE-LKA"], restricted=["DE-SPOC"]))
    assert codes(result)["DE-SPOC"] == R.RESTRICTED_BY_ORIGINATOR
    assert outcomes(result)["FR-SPOC"] == "DELIVER"


# -- liaison officers -------------------------------------------------------------------------------
def test_an_officer_sends_for_its_agency_within_its_delegation() -> None:
    by_case = route("Query", query("FR-PN", agencies=["US-FBI"], case_id="OP-CONDOR", officer="FR-PN-BOGOTA"),
                    owner="FR-PN-BOGOTA")
    assert by_case.rejection is None
    assert outcomes(by_case) == {"US-FBI": "DELIVER"}
    by_country = route("Query", query("FR-PN", agencies=["CO-DIJIN"], case_id="OTHER",
                                      officer="FR-PN-BOGOTA"),
                       owner="FR-PN-BOGOTA")
    assert by_country.rejection is None
    assert outcomes(by_country) == {"CO-DIJIN": "DELIVER"}


@pytest.mark.parametrize(("record", "owner", "code"), [
    # outside its cases and partner countries
    (query("FR-PN", agencies=["US-FBI"], case_id="OTHER", officer="FR-PN-BOGOTA"), "FR-PN-BOGOTA",
     R.OUTSIDE_DELEGATION),
    # a group is wider than its partner countries
    (query("FR-PN", groups=["EU"], case_id="OTHER", officer="FR-PN-BOGOTA"), "FR-PN-BOGOTA",
     R.OUTSIDE_DELEGATION),
    # for another agency than its own
    (query("FR-GN", agencies=["CO-DIJIN"], officer="FR-PN-BOGOTA"), "FR-PN-BOGOTA", R.SPOOFED_ORIGINATOR),
    # an agency naming an officer on its own outbox
    (query("FR-PN", agencies=["CO-DIJIN"], officer="FR-PN-BOGOTA"), "FR-PN", R.SPOOFED_ORIGINATOR),
    # without naming itself
    (query("FR-PN", agencies=["CO-DIJIN"]), "FR-PN-BOGOTA", R.SPOOFED_ORIGINATOR),
    # the copy mark is the bus's
    (query("FR-PN", agencies=["CO-DIJIN"], copy={"kind": "SPOC_OWN", "addressee": "X"}), "FR-PN",
     R.COPY_MARK_BY_SENDER),
])
def test_an_officer_cannot_go_beyond_its_delegation(record: dict[str, Any], owner: str, code: str) -> None:
    rejection = route("Query", record, owner=owner).rejection
    assert rejection is not None
    assert rejection.code == code


@pytest.mark.parametrize("directory", [casework_directory(officer_status="REVOKED"),
                                       casework_directory(officer_ends=NOW)])
def test_a_revoked_or_ended_delegation_stops_the_officer_at_once(directory: Directory) -> None:
    record = query("FR-PN", agencies=["CO-DIJIN"], case_id="OP-CONDOR", officer="FR-PN-BOGOTA")
    rejection = route("Query", record, owner="FR-PN-BOGOTA", directory=directory).rejection
    assert rejection is not None
    assert rejection.code == R.OFFICER_NOT_IN_FORCE


def test_an_officers_reply_must_answer_its_partner_country() -> None:
    state = MemoryState()
    asked = routed(state, "CO-DIJIN", ["FR-PN"], query_kind="INFORMATION")
    ok = route("Reply", reply("FR-PN", asked, outcome="NO_HIT", case_id="X", officer="FR-PN-BOGOTA"),
               state=state, owner="FR-PN-BOGOTA")
    assert ok.rejection is None
    assert outcomes(ok) == {"CO-DIJIN": "DELIVER"}
    other = routed(state, "US-FBI", ["FR-PN"], query_kind="INFORMATION")
    refused = route("Reply", reply("FR-PN", other, outcome="NO_HIT", case_id="X", officer="FR-PN-BOGOTA"),
                    state=state, owner="FR-PN-BOGOTA")
    assert refused.rejection is not None
    assert refused.rejection.code == R.OUTSIDE_DELEGATION


# -- case groups formed on the bus ------------------------------------------------------------------
def formed(members: dict[str, int], *, status: str = "ACTIVE", ends_at: int = NOW + DAY) -> CaseGroup:
    return CaseGroup(name="JIT-ORION", initiator="FR-PN", ends_at=ends_at, created_at=NOW - DAY,
                     status=status,
                     members=members, invited={"ES-CNP": new_id()})


def proposal(action: str = "PROPOSE", sender: str = "FR-PN", **change: Any) -> dict[str, Any]:
    record = query(sender, agencies=change.pop("agencies", ["DE-BKA", "ES-CNP"]))
    record["case_group"] = {"group": "JIT-ORION", "action": action, "ends_at": NOW + DAY, "members": [],
                            **change}
    return record


def test_a_proposal_invites_the_agencies_it_names() -> None:
    result = route("Query", proposal())
    assert result.rejection is None
    assert outcomes(result) == {"DE-BKA": "DELIVER", "ES-CNP": "DELIVER"}


@pytest.mark.parametrize(("record", "groups", "why"), [
    (proposal(), {"JIT-ORION": formed({"FR-PN": NOW - DAY})}, "already exists"),
    (proposal(ends_at=NOW - 1), {}, "end date"),
    (proposal("CLOSE", sender="DE-BKA"), {"JIT-ORION": formed({"FR-PN": 1, "DE-BKA": 2})}, "Only FR-PN"),
    (proposal("CLOSE", sender="US-FBI"), {"JIT-ORION": formed({"FR-PN": 1})}, "no case group"),
    (proposal("EXTEND"), {"JIT-ORION": formed({"FR-PN": 1}, status="CLOSED")}, "closed"),
])
def test_a_change_that_is_not_possible_is_refused(record: dict[str, Any], groups: dict[str, CaseGroup],
                                                   why: str) -> None:
    rejection = route("Query", record, state=MemoryState(case_groups=groups)).rejection
    assert rejection is not None
    assert rejection.code == R.CASE_GROUP_REFUSED
    assert why in rejection.reason


def test_only_current_members_address_a_formed_group_and_reach_only_members() -> None:
    state = MemoryState(case_groups={"JIT-ORION": formed({"FR-PN": NOW - DAY, "DE-BKA": NOW - DAY})})
    result = route("Query", query("DE-BKA", groups=["JIT-ORION"]), state=state)
    assert outcomes(result) == {"FR-PN": "DELIVER"}  # ES-CNP is invited, not a member
    outsider = route("Query", query("US-FBI", groups=["JIT-ORION"]), state=state)
    assert codes(outsider) == {"group:JIT-ORION": R.NOT_A_GROUP_MEMBER}


def test_a_closed_or_ended_group_reaches_nobody() -> None:
    for group in (formed({"FR-PN": 1, "DE-BKA": 2}, status="CLOSED"), formed({"FR-PN": 1, "DE-BKA": 2},
                                                                            ends_at=NOW)):
        result = route("Query", query("FR-PN", groups=["JIT-ORION"]),
                       state=MemoryState(case_groups={"JIT-ORION": group}))
        assert codes(result) == {"group:JIT-ORION": R.GROUP_EXPIRED}


def test_a_later_member_gets_earlier_content_only_with_the_providers_consent() -> None:
    state = MemoryState(case_groups={"JIT-ORION": formed({"FR-PN": NOW - 3 * DAY, "DE-BKA": NOW - 3 * DAY,
                                                          "ES-CNP": NOW - DAY})})
    earlier = routed(state, "DE-BKA", ["FR-PN"])
    state.routed_times[earlier] = NOW - 2 * DAY
    onward = query("FR-PN", groups=["JIT-ORION"], derived_from=earlier)
    assert codes(route("Query", onward, state=state)) == {"DE-BKA": None, "ES-CNP": R.LATE_MEMBER_NO_CONSENT}
    state.add_consent(earlier, "FR-PN")
    assert outcomes(route("Query", onward, state=state)) == {"DE-BKA": "DELIVER", "ES-CNP": "DELIVER"}
    own = query("DE-BKA", groups=["JIT-ORION"], derived_from=earlier)  # the provider passes on its own
    assert outcomes(route("Query", own, state=state)) == {"FR-PN": "DELIVER", "ES-CNP": "DELIVER"}


def test_an_invitation_is_declined_without_an_article_6_ground_but_only_granted_or_refused() -> None:
    state = MemoryState()
    invite = routed(state, "FR-PN", ["DE-BKA"], query_kind="INFORMATION")
    state.invitations[invite] = "JIT-ORION"
    assert route("Reply", reply("DE-BKA", invite, outcome="REFUSED"), state=state).rejection is None
    rejection = route("Reply", reply("DE-BKA", invite, outcome="HIT"), state=state).rejection
    assert rejection is not None
    assert rejection.code == R.OUTCOME_NOT_ALLOWED


# -- Prum II: a person confirms a biometric match before data follows --------------------------------
def data_request(reference: str = "AFIS-77") -> dict[str, Any]:
    record = query("FR-PN", agencies=["DE-BKA"], kind="DATA_REQUEST")
    record["reference"] = reference
    return record


@pytest.mark.parametrize(("status", "outcome", "code"), [
    ("PENDING", "HOLD", R.MATCH_NOT_CONFIRMED),
    ("REJECTED", "DENY", R.MATCH_REJECTED),
    ("CONFIRMED", "DELIVER", None),
])
def test_a_data_request_citing_a_biometric_hit_waits_for_its_confirmation(status: str, outcome: str,
                                                                          code: str | None) -> None:
    state = MemoryState(matches={match_key("DE-BKA", "AFIS-77"): {"status": status, "asker": "FR-PN"}})
    result = route("Query", data_request(), state=state)
    assert (outcomes(result)["DE-BKA"], codes(result)["DE-BKA"]) == (outcome, code)
    assert result.notify_hub == ()  # a held request is no matter for the hub's review


def test_another_agencys_hit_or_reference_does_not_hold_a_request() -> None:
    state = MemoryState(matches={match_key("DE-BKA", "AFIS-77"): {"status": "PENDING", "asker": "ES-CNP"}})
    assert outcomes(route("Query", data_request(), state=state)) == {"DE-BKA": "DELIVER"}
    assert outcomes(route("Query", data_request("OTHER"), state=state)) == {"DE-BKA": "DELIVER"}


def confirmation_state(status: str = "PENDING") -> tuple[MemoryState, str]:
    state = MemoryState()
    asked = routed(state, "FR-PN", ["DE-BKA"], query_kind="HIT_CHECK")
    state.matches[match_key("DE-BKA", "AFIS-77")] = {"status": status, "asker": "FR-PN", "query": asked}
    return state, asked


def confirming(asked: str, *, confirmed: bool = True, outcome: str = "HIT", by: str = "Insp. Weber",
               reference: str = "AFIS-77") -> dict[str, Any]:
    record = reply("DE-BKA", asked, outcome=outcome)
    record["reference"] = reference
    record["confirmation"] = {"confirmed": confirmed, "verified_by": by, "note": None}
    return record


def test_the_data_owner_confirms_or_rejects_its_pending_match() -> None:
    state, asked = confirmation_state()
    assert outcomes(route("Reply", confirming(asked), state=state)) == {"FR-PN": "DELIVER"}
    rejected = route("Reply", confirming(asked, confirmed=False, outcome="NO_HIT"), state=state)
    assert outcomes(rejected) == {"FR-PN": "DELIVER"}


@pytest.mark.parametrize("change", [
    {"outcome": "NO_HIT"},  # a confirmation is a HIT
    {"by": "  "},  # names the officer who verified it
    {"reference": "OTHER"},  # of its own HIT
])
def test_a_confirmation_that_does_not_fit_is_refused(change: dict[str, Any]) -> None:
    state, asked = confirmation_state()
    rejection = route("Reply", confirming(asked, **change), state=state).rejection
    assert rejection is not None
    assert rejection.code == R.MATCH_CONFIRMATION_INVALID


def test_a_match_is_decided_once() -> None:
    state, asked = confirmation_state("CONFIRMED")
    rejection = route("Reply", confirming(asked), state=state).rejection
    assert rejection is not None
    assert rejection.code == R.MATCH_CONFIRMATION_INVALID
