"""Liaison officers' pure parts: what posting checks, and which delegations the delegations service ends."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest
from typer.testing import CliRunner

from liaison.cli.main import app
from liaison.directory import Directory, Officer
from liaison.errors import ConfigError
from liaison.local.paths import REPO_ROOT
from liaison.officers import officer_key, plan_post
from services.delegations.app import ended, next_end

NOW = int(time.time() * 1000)
HOUR = 3_600_000


@pytest.fixture
def entries() -> dict[str, Any]:
    return dict(Directory.from_file(REPO_ROOT / "deploy" / "directory.yaml").entries())


def test_a_post_names_the_officer_after_its_agency_and_post(entries: dict[str, Any]) -> None:
    officer = plan_post(entries, "fr-pn", "bogota", post="Bogota", cases=["OP-CONDOR"], countries=["co"],
                        starts_at=NOW, ends_at=NOW + HOUR)
    assert (officer.code, officer.agency, officer.countries) == ("FR-PN-BOGOTA", "FR-PN", frozenset({"CO"}))
    assert officer.in_force(NOW)
    assert Directory.from_entries({**entries, officer_key(officer.code): officer.to_entry()}).officers


def test_an_agency_code_with_an_underscore_posts_officers_too(entries: dict[str, Any]) -> None:
    cyber = {**entries, "agency/SE-NOA_CYBER": {"code": "SE-NOA_CYBER", "name": "NOA cyber crime centre"}}
    officer = plan_post(cyber, "se-noa_cyber", "hague", post="The Hague", cases=["OP-DARK"], countries=[],
                        starts_at=NOW, ends_at=NOW + HOUR)
    assert (officer.code, officer.agency) == ("SE-NOA_CYBER-HAGUE", "SE-NOA_CYBER")
    posted = Directory.from_entries({**cyber, officer_key(officer.code): officer.to_entry()}).officers
    assert posted["SE-NOA_CYBER-HAGUE"].agency == "SE-NOA_CYBER"


@pytest.mark.parametrize(("agency", "kwargs", "message"), [
    ("fr pn", {}, "not an agency code"),
    ("SE-NOA", {}, "is not in the directory"),
    ("FR-PN", {"countries": ["ZZ"]}, "not an ISO 3166"),
    ("FR-PN", {"countries": [], "cases": []}, "names its cases or its partner countries"),
    ("FR-PN", {"ends_at": NOW - HOUR}, "must end after it starts"),
])
def test_a_wrong_post_says_what_to_fix(entries: dict[str, Any], agency: str, kwargs: dict[str, Any],
                                       message: str) -> None:
    args: dict[str, Any] = {"post": "", "cases": ["C-1"], "countries": ["CO"], "starts_at": NOW,
                            "ends_at": NOW + HOUR, **kwargs}
    with pytest.raises(ConfigError, match=message):
        plan_post(entries, agency, "BOGOTA", **args)


def test_an_officer_in_force_is_not_posted_twice(entries: dict[str, Any]) -> None:
    first = plan_post(entries, "FR-PN", "BOGOTA", post="", cases=["C-1"], countries=[], starts_at=NOW - HOUR,
                      ends_at=NOW + HOUR)
    posted = {**entries, officer_key(first.code): first.to_entry()}
    with pytest.raises(ConfigError, match="already posted"):
        plan_post(posted, "FR-PN", "BOGOTA", post="", cases=["C-2"], countries=[], starts_at=NOW,
                  ends_at=NOW + HOUR)
    revoked = {**entries, officer_key(first.code): replace(first, status="REVOKED").to_entry()}
    assert plan_post(revoked, "FR-PN", "BOGOTA", post="", cases=["C-2"], countries=[], starts_at=NOW,
                     ends_at=NOW + HOUR).cases == frozenset({"C-2"})


def _directory(*officers: Officer) -> Directory:
    base = dict(Directory.from_file(REPO_ROOT / "deploy" / "directory.yaml").entries())
    return Directory.from_entries({**base, **{officer_key(o.code): o.to_entry() for o in officers}})


def test_the_delegations_service_ends_revoked_and_expired_officers_once() -> None:
    live = Officer("FR-PN-BOGOTA", "FR-PN", countries=frozenset({"CO"}), starts_at=NOW - HOUR,
                   ends_at=NOW + HOUR)
    gone = Officer("DE-BKA-MADRID", "DE-BKA", countries=frozenset({"ES"}), starts_at=NOW - HOUR, ends_at=NOW)
    cut = replace(Officer("IT-PS-LIMA", "IT-PS", cases=frozenset({"C"}), starts_at=NOW - HOUR,
                          ends_at=NOW + HOUR),
                  status="REVOKED")
    directory = _directory(live, gone, cut)
    assert [o.code for o in ended(directory, NOW, set())] == ["DE-BKA-MADRID", "IT-PS-LIMA"]
    assert [o.code for o in ended(directory, NOW, {"DE-BKA-MADRID", "IT-PS-LIMA"})] == []
    assert next_end(directory, NOW) == NOW + HOUR  # it wakes when the next one ends
    assert next_end(_directory(gone), NOW) is None


def test_officer_commands_refuse_wrong_arguments_in_one_line() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["officer", "post", "FR-PN", "BOGOTA"])
    assert result.exit_code == 2
    assert "names its cases (--case) or its partner countries (--country)" in result.output
    result = runner.invoke(app, ["officer", "post", "FR-PN", "BOGOTA", "--case", "C", "--until", "soon"])
    assert result.exit_code == 2
    assert "--until: 'soon' is not a time" in result.output
    assert "Traceback" not in result.output
