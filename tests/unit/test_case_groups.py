"""The state of case groups formed on the bus, changed by their members' messages (pure logic)."""

from __future__ import annotations

from typing import Any

from liaison.case_groups import (
    MAX_MEMBERS,
    MAX_RUNNING,
    MAX_TERM_MS,
    RETENTION_MS,
    CaseGroup,
    answered,
    changed,
    check_change,
    ended,
    proposed,
)

NOW = 1_750_000_000_000
DAY = 86_400_000


def env(sender: str = "FR-PN", message_id: str = "q-1") -> dict[str, Any]:
    return {"originator": sender, "message_id": message_id, "purpose": "Operation Orion",
            "legal_basis": "EU MLA Convention 2000 Art. 13", "case_id": "ORION"}


def change(action: str, **more: Any) -> dict[str, Any]:
    return {"group": "JIT-ORION", "action": action, "ends_at": NOW + DAY, "members": [], **more}


def group() -> CaseGroup:
    return proposed(change("PROPOSE"), env(), ["DE-BKA", "ES-CNP"], NOW)


def test_a_proposal_makes_the_initiator_the_only_member_and_invites_the_rest() -> None:
    g = group()
    assert dict(g.members) == {"FR-PN": NOW}
    assert dict(g.invited) == {"DE-BKA": "q-1", "ES-CNP": "q-1"}
    assert (g.purpose, g.legal_basis, g.case_id) == ("Operation Orion", "EU MLA Convention 2000 Art. 13",
                                                     "ORION")
    assert g.history[-1]["action"] == "PROPOSED"
    assert CaseGroup.from_value(g.to_value()) == g


def test_accepting_joins_declining_leaves_and_a_second_answer_changes_nothing() -> None:
    g = answered(group(), "DE-BKA", "q-1", accepted=True, at=NOW + 1, reply_id="r-1")
    assert g is not None
    assert g.members["DE-BKA"] == NOW + 1
    g = answered(g, "ES-CNP", "q-1", accepted=False, at=NOW + 2, reply_id="r-2")
    assert g is not None
    assert "ES-CNP" not in g.members
    assert g.left["ES-CNP"] == NOW + 2
    assert answered(g, "DE-BKA", "q-1", accepted=True, at=NOW + 3, reply_id="r-3") is None
    assert answered(g, "IT-PS", "q-1", accepted=True, at=NOW + 3, reply_id="r-4") is None
    assert [h["action"] for h in g.history] == ["PROPOSED", "JOINED", "DECLINED"]


def test_an_answer_after_the_end_changes_nothing() -> None:
    assert answered(group(), "DE-BKA", "q-1", accepted=True, at=NOW + DAY, reply_id="r") is None


def test_remove_extend_close_tell_the_members() -> None:
    g = answered(group(), "DE-BKA", "q-1", accepted=True, at=NOW, reply_id="r")
    assert g is not None
    g2, tell = changed(g, change("REMOVE", members=["DE-BKA"]), env(message_id="q-2"), [], NOW + 5)
    assert "DE-BKA" not in g2.members
    assert tell == {"DE-BKA"}
    g3, tell = changed(g, change("EXTEND", ends_at=NOW + 9 * DAY), env(message_id="q-3"), [], NOW + 5)
    assert g3.ends_at == NOW + 9 * DAY
    assert tell == {"DE-BKA"}
    g4, tell = changed(g, change("CLOSE"), env(message_id="q-4"), [], NOW + 5)
    assert g4.status == "CLOSED"
    assert g4.members_now(NOW + 6) == frozenset()
    assert tell == {"DE-BKA"}
    assert ended(g, NOW + DAY).ended_why(NOW + DAY) is not None


def test_changes_are_checked() -> None:
    g = group()
    ok = {"sender": "FR-PN", "invited": ["IT-PS"], "now_ms": NOW, "name_taken": False}
    assert check_change(None, change("PROPOSE"), **ok) is None
    assert check_change(None, change("PROPOSE"), **{**ok, "name_taken": True}) is not None
    assert check_change(None, change("PROPOSE", group="jit"), **ok) is not None
    assert check_change(None, change("PROPOSE"), **ok, running=MAX_RUNNING - 1) is None
    assert "at most" in str(check_change(None, change("PROPOSE"), **ok, running=MAX_RUNNING))
    assert check_change(g, change("ADD"), **ok, running=MAX_RUNNING) is None  # only proposals count
    assert check_change(None, change("PROPOSE"), **{**ok, "invited": []}) is not None
    crowd = [f"DE-A{i}" for i in range(MAX_MEMBERS)]
    assert check_change(None, change("PROPOSE"), **{**ok, "invited": crowd})
    assert check_change(g, change("ADD"), **ok) is None
    stranger = check_change(g, change("ADD"), **{**ok, "sender": "DE-BKA"})
    assert stranger == "There is no case group JIT-ORION formed on the bus."
    assert check_change(g, change("REMOVE", members=["FR-PN"]), **ok) is not None
    assert check_change(g, change("REMOVE", members=["US-FBI"]), **ok) is not None
    assert check_change(g, change("REMOVE", members=["ES-CNP"]), **ok) is None
    assert check_change(g, change("EXTEND", ends_at=NOW - 1), **ok) is not None
    assert check_change(g, change("CLOSE"), **{**ok, "now_ms": NOW + DAY}) is not None
    assert check_change(g, change("DISSOLVE"), **ok) is not None


def test_a_group_runs_two_years_at_a_time_and_is_kept_ninety_days_after_its_end() -> None:
    ok = {"sender": "FR-PN", "invited": ["IT-PS"], "now_ms": NOW, "name_taken": False}
    assert check_change(None, change("PROPOSE", ends_at=NOW + MAX_TERM_MS), **ok) is None
    assert "two years" in str(check_change(None, change("PROPOSE", ends_at=NOW + MAX_TERM_MS + 1), **ok))
    assert "two years" in str(check_change(group(), change("EXTEND", ends_at=NOW + MAX_TERM_MS + 1), **ok))
    assert group().to_value()["x"] == group().ends_at + RETENTION_MS  # the router's sweep deletes it then
