"""Onboarding's pure part: which directory entry each command writes, and what it tells the operator."""

from __future__ import annotations

from typing import Any

import pytest

from liaison.directory import Directory
from liaison.errors import ConfigError
from liaison.local.paths import REPO_ROOT
from liaison.onboarding import Outcome, agency_key, plan_add, plan_remove, plan_status


@pytest.fixture
def entries() -> dict[str, Any]:
    """The demonstration directory in its `bus.directory` form."""
    return dict(Directory.from_file(REPO_ROOT / "deploy" / "directory.yaml").entries())


def _with(entries: dict[str, Any], code: str, entry: dict[str, Any] | None) -> dict[str, Any]:
    out = dict(entries)
    if entry is None:
        out.pop(agency_key(code), None)
    else:
        out[agency_key(code)] = entry
    return out


def test_a_new_agency_gets_the_entry_shape_the_directory_reads(entries: dict[str, Any]) -> None:
    """The entry is Agency.to_entry() under agency/<CODE>, so Directory.from_entries reads it back."""
    plan = plan_add(entries, "se-noa", name="Polisen NOA", country="se", groups=["eu"], clearances=["dna"])
    assert plan.change == "added"
    assert plan.entry == {"code": "SE-NOA", "name": "Polisen NOA", "country": "SE", "groups": ["EU"],
                          "hub": False, "status": "ACTIVE", "clearances": ["DNA"]}
    agency = Directory.from_entries(_with(entries, "SE-NOA", plan.entry)).agency("SE-NOA")
    assert agency is not None
    assert agency.groups == {"EU"}


def test_adding_again_changes_nothing_and_changes_are_named(entries: dict[str, Any]) -> None:
    """Same values: unchanged. Other values: updated, naming the fields; status and hub are kept."""
    current = entries[agency_key("DE-BKA")]
    same = plan_add(entries, "DE-BKA", name=current["name"], country="DE", groups=current["groups"],
                    clearances=current["clearances"])
    assert same.change == "unchanged"
    assert not same.writes
    suspended = _with(entries, "DE-BKA", {**current, "status": "SUSPENDED"})
    changed = plan_add(suspended, "DE-BKA", name="BKA", country="DE", groups=["EU"], clearances=[])
    assert changed.change == "updated"
    assert changed.changed_fields == ("name", "groups", "clearances")
    assert changed.entry is not None
    assert changed.entry["status"] == "SUSPENDED"
    assert any("resume DE-BKA" in note for note in changed.notes)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"groups": ["NORDIC"]}, "NORDIC is not a group in the directory; standing groups: AMERIPOL"),
    ({"groups": ["JIT-ORION"]}, "CASE group"),
    ({"country": "NO"}, "does not match"),
    ({"clearances": ["DNS"]}, "not a data category"),
    ({"name": "  "}, "--name must not be empty"),
])
def test_wrong_values_say_what_to_fix(entries: dict[str, Any], kwargs: dict[str, Any], message: str) -> None:
    """Groups must be standing groups of this directory; country and clearances are checked."""
    args: dict[str, Any] = {"name": "Polisen", "country": "SE", **kwargs}
    with pytest.raises(ConfigError, match=message):
        plan_add(entries, "SE-NOA", **args)


def test_suspend_and_resume_flip_the_status_once(entries: dict[str, Any]) -> None:
    """Suspending twice changes nothing the second time; an unknown agency is named."""
    plan = plan_status(entries, "FR-PN", "SUSPENDED")
    assert plan.change == "suspended"
    assert plan.entry is not None
    assert plan.entry["status"] == "SUSPENDED"
    after = _with(entries, "FR-PN", plan.entry)
    assert plan_status(after, "FR-PN", "SUSPENDED").change == "unchanged"
    assert plan_status(after, "FR-PN", "ACTIVE").change == "resumed"
    with pytest.raises(ConfigError, match="liaison agency add SE-NOA"):
        plan_status(entries, "SE-NOA", "SUSPENDED")


def test_remove_writes_a_tombstone_and_reports_what_still_names_it(entries: dict[str, Any]) -> None:
    """A tombstone (None); case groups and agreements naming the agency are reported, not changed."""
    plan = plan_remove(entries, "US-FBI")
    assert plan.change == "removed"
    assert plan.entry is None
    assert "still a party to agreement DE-US-PCSC" in plan.notes
    assert "still listed in case group JIT-ORION" in plan_remove(entries, "FR-PN").notes
    gone = _with(entries, "US-FBI", None)
    assert plan_remove(gone, "US-FBI").change == "unchanged"


def test_summaries() -> None:
    """One line for the operator."""
    assert Outcome("SE-NOA", "added", tuple(f"t{i}" for i in range(7))).summary() == \
        "created 7 topics, directory entry added"
    assert Outcome("SE-NOA", "unchanged").summary() == "nothing to change"
    updated = Outcome("SE-NOA", "updated", changed_fields=("name",))
    assert updated.summary() == "directory entry updated (name)"
    assert Outcome("SE-NOA", "unchanged", ("t0",)).summary() == "created 1 topic"
