"""Message-level rejections, addressing, restrictions, TLP and expiry: each rule both ways."""

from __future__ import annotations

from typing import Any

import pytest

from liaison.policy import MemoryState, RoutingResult
from liaison.policy import reasons as R
from tests.unit.policy_fixtures import NOW, alert, codes, engine, outcomes, query, reply, routed


def route(message_type: str, record: dict[str, Any], *, owner: str | None = None,
          state: MemoryState | None = None, now: int = NOW, **policy: Any) -> RoutingResult:
    owner = owner or record["envelope"]["originator"]
    return engine(**policy).route(message_type, record, outbox_owner=owner, now_ms=now,
                                  state=state or MemoryState())


# -- whole-message rejections ---------------------------------------------------------------------
def test_originator_owning_the_outbox_is_routed() -> None:
    """A message written to its originator's own outbox is routed."""
    result = route("Alert", alert(agencies=["DE-BKA"]), owner="FR-PN")
    assert result.rejection is None
    assert outcomes(result) == {"DE-BKA": "DELIVER"}


def test_spoofed_originator_is_rejected() -> None:
    """A message claiming another agency as originator is dead-lettered."""
    result = route("Alert", alert("DE-BKA", agencies=["US-FBI"]), owner="FR-PN")
    assert result.rejection is not None
    assert result.rejection.code == R.SPOOFED_ORIGINATOR
    assert result.decisions == ()


def test_unknown_originator_is_rejected() -> None:
    """An outbox owner missing from the directory cannot send."""
    result = route("Alert", alert("GB-NCA", agencies=["DE-BKA"]))
    assert result.rejection is not None
    assert result.rejection.code == R.UNKNOWN_ORIGINATOR


def test_suspended_originator_is_rejected() -> None:
    """A suspended agency cannot send."""
    result = route("Alert", alert("IT-PS", agencies=["DE-BKA"]))
    assert result.rejection is not None
    assert result.rejection.code == R.ORIGINATOR_SUSPENDED


def test_unknown_record_type_is_rejected() -> None:
    """Only Alert, Query and Reply may be routed."""
    result = route("Receipt", alert(agencies=["DE-BKA"]))
    assert result.rejection is not None
    assert result.rejection.code == R.UNKNOWN_TYPE


@pytest.mark.parametrize("record", [{}, {"envelope": None}, {"envelope": {"addressing": {}}}])
def test_malformed_record_is_rejected_as_invalid(record: dict[str, Any]) -> None:
    """A record without what routing needs is dead-lettered as INVALID, never an exception."""
    result = route("Alert", record, owner="FR-PN")
    assert result.rejection is not None
    assert result.rejection.code == R.INVALID


def test_urgent_query_needs_a_ground() -> None:
    """URGENT without urgency_ground is rejected; with one, or not urgent, it is routed."""
    bad = route("Query", query(agencies=["DE-BKA"], priority="URGENT"))
    assert bad.rejection is not None
    assert bad.rejection.code == R.URGENT_WITHOUT_GROUND
    good = route("Query", query(agencies=["DE-BKA"], priority="URGENT",
                                urgency_ground="THREAT_TO_LIFE_OR_SAFETY"))
    assert outcomes(good) == {"DE-BKA": "DELIVER"}
    high = route("Query", query(agencies=["DE-BKA"], priority="HIGH"))
    assert outcomes(high) == {"DE-BKA": "DELIVER"}


def test_consent_query_must_name_its_source() -> None:
    """A CONSENT query without derived_from is rejected."""
    result = route("Query", query(kind="CONSENT", agencies=["DE-BKA"]))
    assert result.rejection is not None
    assert result.rejection.code == R.CONSENT_WITHOUT_SOURCE


# -- addressing -----------------------------------------------------------------------------------
def test_direct_group_and_broadcast_expand() -> None:
    """Named agencies, group members and (for CLEAR) every active agency are recipients."""
    assert set(outcomes(route("Alert", alert(agencies=["DE-BKA", "US-FBI"])))) == {"DE-BKA", "US-FBI"}
    assert set(outcomes(route("Alert", alert(groups=["EU"])))) == {"FR-GN", "DE-BKA", "IT-PS"}
    everyone = route("Alert", alert(broadcast=True, tlp="CLEAR"))
    assert set(outcomes(everyone)) == {"INT-IPSG", "FR-GN", "DE-BKA", "US-FBI", "BR-PF"}
    assert set(everyone.delivered) == set(outcomes(everyone))


@pytest.mark.parametrize("addressing", [{"agencies": ["FR-PN"]}, {"groups": ["EU"]},
                                        {"broadcast": True, "tlp": "CLEAR"}, {"groups": ["JIT-A"]}])
def test_sender_never_receives_its_own_message(addressing: dict[str, Any]) -> None:
    """However it is addressed, the originator is not a recipient."""
    result = route("Alert", alert(**addressing))
    assert "FR-PN" not in outcomes(result)


def test_named_and_group_recipient_gets_one_decision() -> None:
    """An agency reached twice has one decision."""
    result = route("Alert", alert(agencies=["DE-BKA"], groups=["EU", "JIT-A"]))
    assert [d.recipient for d in result.decisions].count("DE-BKA") == 1


def test_unknown_agency_is_denied() -> None:
    """An addressee missing from the directory is denied with UNKNOWN_RECIPIENT."""
    result = route("Alert", alert(agencies=["GB-NCA", "DE-BKA"]))
    assert codes(result) == {"GB-NCA": R.UNKNOWN_RECIPIENT, "DE-BKA": None}


def test_unknown_group_is_denied() -> None:
    """An unknown group gets one UNKNOWN_RECIPIENT decision under its name."""
    result = route("Alert", alert(groups=["INTERPOL-ALL"]))
    assert codes(result) == {"group:INTERPOL-ALL": R.UNKNOWN_RECIPIENT}


def test_live_case_group_delivers_and_expired_one_reaches_nobody() -> None:
    """A case group reaches its members until it expires; then one GROUP_EXPIRED decision."""
    live = route("Alert", alert(groups=["JIT-A"]))
    assert outcomes(live) == {"DE-BKA": "DELIVER", "US-FBI": "DELIVER"}
    expired = route("Alert", alert("BR-PF", groups=["JIT-OLD"]))
    assert codes(expired) == {"group:JIT-OLD": R.GROUP_EXPIRED}
    assert expired.delivered == ()


def test_suspended_recipient_is_denied() -> None:
    """A suspended agency is denied when named or reached through a group; broadcast skips it."""
    assert codes(route("Alert", alert(agencies=["IT-PS"])))["IT-PS"] == R.RECIPIENT_SUSPENDED
    assert codes(route("Alert", alert(groups=["EU"])))["IT-PS"] == R.RECIPIENT_SUSPENDED
    assert "IT-PS" not in outcomes(route("Alert", alert(broadcast=True, tlp="CLEAR")))


def test_lower_case_addressee_is_unknown() -> None:
    """Agency codes are upper case; anything else matches nobody (fail safe)."""
    assert codes(route("Alert", alert(agencies=["de-bka"]))) == {"de-bka": R.UNKNOWN_RECIPIENT}


# -- restricted recipients ------------------------------------------------------------------------
def test_restricted_agency_is_denied_others_are_not() -> None:
    """An agency in `restricted` never receives, whatever the addressing."""
    result = route("Alert", alert(groups=["EU"], agencies=["US-FBI"], restricted=["DE-BKA"]))
    assert codes(result)["DE-BKA"] == R.RESTRICTED_BY_ORIGINATOR
    assert outcomes(result)["US-FBI"] == "DELIVER"
    assert outcomes(result)["FR-GN"] == "DELIVER"


def test_restricted_country_covers_all_its_agencies() -> None:
    """A country in `restricted` (any case) denies every agency of that country."""
    result = route("Alert", alert("DE-BKA", groups=["EU"], restricted=["fr"]))
    assert codes(result)["FR-PN"] == R.RESTRICTED_BY_ORIGINATOR
    assert codes(result)["FR-GN"] == R.RESTRICTED_BY_ORIGINATOR


def test_restricted_applies_to_direct_naming_too() -> None:
    """Naming a restricted agency directly does not lift the restriction."""
    result = route("Query", query(agencies=["US-FBI"], restricted=["US"]))
    assert codes(result) == {"US-FBI": R.RESTRICTED_BY_ORIGINATOR}


# -- TLP --------------------------------------------------------------------------------------------
def test_tlp_red_reaches_named_agencies_only() -> None:
    """RED: named agencies receive it; group members and broadcast do not."""
    result = route("Alert", alert(tlp="RED", agencies=["US-FBI"], groups=["EU"]))
    assert outcomes(result)["US-FBI"] == "DELIVER"
    assert codes(result)["DE-BKA"] == R.TLP_RED_NOT_NAMED
    assert codes(result)["FR-GN"] == R.TLP_RED_NOT_NAMED
    broadcast = route("Alert", alert(tlp="RED", broadcast=True))
    assert set(codes(broadcast).values()) == {R.TLP_RED_NOT_NAMED}


def test_tlp_red_named_and_in_group_counts_as_named() -> None:
    """An agency both named and in an addressed group gets a RED message."""
    result = route("Alert", alert(tlp="RED", agencies=["DE-BKA"], groups=["EU"]))
    assert outcomes(result)["DE-BKA"] == "DELIVER"


@pytest.mark.parametrize("tlp", ["AMBER", "AMBER_STRICT"])
def test_tlp_amber_goes_to_groups_but_is_never_broadcast(tlp: str) -> None:
    """AMBER and AMBER+STRICT reach named agencies and group members, never a broadcast."""
    grouped = route("Alert", alert(tlp=tlp, groups=["EU"]))
    assert outcomes(grouped)["DE-BKA"] == "DELIVER"
    result = route("Alert", alert(tlp=tlp, broadcast=True, agencies=["US-FBI"]))
    assert outcomes(result)["US-FBI"] == "DELIVER"
    assert codes(result)["DE-BKA"] == R.TLP_AMBER_BROADCAST


@pytest.mark.parametrize(("tlp", "setting"), [("AMBER", "amber_reach"),
                                              ("AMBER_STRICT", "amber_strict_reach")])
def test_tlp_amber_named_only_by_policy(tlp: str, setting: str) -> None:
    """With reach `named`, AMBER goes only to agencies named directly."""
    result = route("Alert", alert(tlp=tlp, groups=["EU"], agencies=["US-FBI"]), **{setting: "named"})
    assert outcomes(result)["US-FBI"] == "DELIVER"
    assert codes(result)["DE-BKA"] == R.TLP_AMBER_NOT_NAMED


def test_tlp_green_goes_to_groups_not_broadcast() -> None:
    """GREEN reaches groups and named agencies but not a broadcast."""
    assert outcomes(route("Alert", alert(tlp="GREEN", groups=["EU"])))["DE-BKA"] == "DELIVER"
    result = route("Alert", alert(tlp="GREEN", broadcast=True))
    assert set(codes(result).values()) == {R.TLP_GREEN_BROADCAST}


def test_tlp_clear_may_be_broadcast() -> None:
    """CLEAR reaches every active agency."""
    result = route("Alert", alert(tlp="CLEAR", broadcast=True))
    assert set(outcomes(result).values()) == {"DELIVER"}


def test_unknown_tlp_label_is_read_as_red() -> None:
    """A label the engine does not know gets the strictest reading."""
    result = route("Alert", alert(tlp="PURPLE", groups=["EU"], agencies=["US-FBI"]))
    assert codes(result)["DE-BKA"] == R.TLP_RED_NOT_NAMED
    assert outcomes(result)["US-FBI"] == "DELIVER"


# -- expiry ---------------------------------------------------------------------------------------
def test_expired_message_is_denied_for_everyone() -> None:
    """expires_at at or before now: nobody receives it."""
    for expires in (NOW, NOW - 1):
        result = route("Alert", alert(agencies=["DE-BKA", "US-FBI"], expires_at=expires))
        assert set(codes(result).values()) == {R.EXPIRED}


def test_unexpired_message_is_delivered() -> None:
    """expires_at in the future, or none, does not stop delivery."""
    result = route("Alert", alert(agencies=["DE-BKA"], expires_at=NOW + 1))
    assert outcomes(result) == {"DE-BKA": "DELIVER"}


# -- determinism and shape ------------------------------------------------------------------------
def test_decisions_are_sorted_and_plain_delivery_has_no_reason() -> None:
    """Decisions come sorted by recipient; a plain DELIVER has no code, reason or redactions."""
    result = route("Alert", alert(agencies=["US-FBI", "DE-BKA", "BR-PF"]))
    assert [d.recipient for d in result.decisions] == ["BR-PF", "DE-BKA", "US-FBI"]
    for d in result.decisions:
        assert (d.outcome, d.reason_code, d.reason, d.redactions) == ("DELIVER", None, None, ())
        assert d.rule == "default"


def test_route_does_not_touch_the_record() -> None:
    """Routing never changes the record it reads."""
    record = alert(groups=["EU"], with_biometrics=True, restricted=["de"])
    before = repr(record)
    route("Alert", record)
    assert repr(record) == before


def test_reply_rejections_do_not_depend_on_state_order() -> None:
    """A reply to a routed query is routed; the same reply with no state is rejected."""
    state = MemoryState()
    asked = routed(state, "DE-BKA", ["FR-PN"], query_kind="INFORMATION")
    assert route("Reply", reply("FR-PN", asked), state=state).rejection is None
    assert route("Reply", reply("FR-PN", asked)).rejection is not None
