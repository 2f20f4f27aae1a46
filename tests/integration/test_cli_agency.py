"""`liaison agency` through the entry point, against a real bus."""

from __future__ import annotations

import asyncio

import pytest

from liaison.directory import Directory
from liaison.onboarding import read_entries
from tests.bus_harness import Bus
from tests.integration.test_cli_common import CLOSED_PORT, cli, cli_env, module_bus

pytestmark = pytest.mark.asyncio(loop_scope="module")
bus = module_bus()


async def _directory(bus: Bus) -> Directory:
    return Directory.from_entries(await read_entries(bus.settings))


async def test_add_is_idempotent_and_says_what_it_changed(bus: Bus) -> None:
    """add creates 7 topics and the entry; again, nothing; with new values, an update."""
    args = ["agency", "add", "SE-NOA", "--country", "SE", "--name", "Polisen NOA", "--group", "EU",
            "--clearance", "dna"]
    first = await cli(*args, settings=bus.settings)
    assert first.code == 0, first.err
    assert first.out.splitlines()[0] == "SE-NOA: created 7 topics, directory entry added"
    assert "the cluster is not secured" in first.out
    assert "no credential or ACLs were created" in first.out
    agency = (await _directory(bus)).agency("SE-NOA")
    assert agency is not None
    assert (agency.name, agency.groups, agency.clearances) == ("Polisen NOA", {"EU"}, {"DNA"})

    second = await cli(*args, settings=bus.settings)
    assert second.out.strip() == "SE-NOA: nothing to change"

    renamed = await cli(*args[:5], "--name", "Polisen Nationella operativa avdelningen", "--group", "EU",
                        "--json", settings=bus.settings)
    assert renamed.code == 0, renamed.err
    assert renamed.json()["summary"] == "directory entry updated (name, clearances)"
    assert renamed.json()["topics_created"] == []

    shown = await cli("agency", "show", "se-noa", "--json", settings=bus.settings)
    assert shown.json()["name"] == "Polisen Nationella operativa avdelningen"
    assert all(shown.json()["topics"].values())
    listed = await cli("agency", "list", "--json", settings=bus.settings)
    assert "SE-NOA" in {a["code"] for a in listed.json()}


async def test_an_onboarded_agency_can_exchange_at_once(bus: Bus) -> None:
    """The router picks up the new outbox: a query from the new agency is delivered."""
    added = await cli("agency", "add", "FI-KRP", "--country", "FI", "--name", "Keskusrikospoliisi",
                      "--group", "EU", settings=bus.settings)
    assert added.code == 0, added.err
    sent = await cli("send", "query", "--from", "FI-KRP", "--to", "DE-BKA", "--question", "Known?",
                     "--wait", "--timeout", "40", "--json", settings=bus.settings, timeout_s=60)
    assert sent.code == 0, sent.err
    assert [(x["recipient"], x["kind"]) for x in sent.json()["receipts"]] == [("DE-BKA", "DELIVERED")]


async def test_suspend_resume_remove(bus: Bus) -> None:
    """Status flips once, then there is nothing to change; remove keeps the topics and says so."""
    await cli("agency", "add", "NO-KRIPOS", "--country", "NO", "--name", "Kripos", settings=bus.settings)
    suspended = await cli("agency", "suspend", "NO-KRIPOS", settings=bus.settings)
    assert suspended.out.strip() == "NO-KRIPOS: suspended"
    agency = (await _directory(bus)).agency("NO-KRIPOS")
    assert agency is not None
    assert agency.status == "SUSPENDED"
    again = await cli("agency", "suspend", "NO-KRIPOS", settings=bus.settings)
    assert again.out.splitlines()[0] == "NO-KRIPOS: nothing to change"
    resumed = await cli("agency", "resume", "NO-KRIPOS", "--json", settings=bus.settings)
    assert resumed.json()["directory"] == "resumed"

    removed = await cli("agency", "remove", "NO-KRIPOS", settings=bus.settings)
    assert removed.code == 0, removed.err
    assert removed.out.splitlines()[0] == "NO-KRIPOS: directory entry removed"
    assert "its 7 topics and the audit trail are kept" in removed.out
    assert (await _directory(bus)).agency("NO-KRIPOS") is None
    assert (await cli("agency", "remove", "NO-KRIPOS", settings=bus.settings)).out.startswith(
        "NO-KRIPOS: nothing to change")
    gone = await cli("agency", "show", "NO-KRIPOS", settings=bus.settings)
    assert gone.code == 1
    assert "not in the directory" in gone.one_error_line()
    back = await cli("agency", "add", "NO-KRIPOS", "--country", "NO", "--name", "Kripos",
                     settings=bus.settings)
    assert back.out.splitlines()[0] == "NO-KRIPOS: directory entry added"  # the topics were kept


async def test_wrong_values_are_refused_in_one_line(bus: Bus) -> None:
    """A wrong code, country, group or clearance, or a missing option: one line, non-zero."""
    base = ["agency", "add", "SE-X", "--name", "X"]
    cases = [  # the checks themselves: tests/unit/test_onboarding.py
        (["agency", "add", "SENOA", "--country", "SE", "--name", "X"], 2, "not an agency code"),
        ([*base, "--country", "FR"], 1, "does not match"),
        ([*base, "--country", "SE", "--group", "NORDIC"], 1, "standing groups: AMERIPOL"),
        (["agency", "suspend", "SE-NEVER"], 1, "not in the directory"),
    ]
    results = await asyncio.gather(*(cli(*args, settings=bus.settings) for args, _, _ in cases))
    for (args, code, expected), r in zip(cases, results, strict=True):
        assert r.code == code, (args, r.err)
        assert expected in r.one_error_line(), (args, r.err)
    assert (await _directory(bus)).agency("SE-X") is None


async def test_agency_commands_with_the_broker_down_or_no_bus(bus: Bus) -> None:
    """A broker that is down, or a prefix with no bus behind it: one clear line, quickly."""
    down = cli_env(bus.settings, LIAISON_BOOTSTRAP_SERVERS=CLOSED_PORT)
    r = await cli("agency", "add", "SE-NOA", "--country", "SE", "--name", "X", env=down)
    assert r.code == 1
    assert "no Kafka broker answers" in r.one_error_line()
    assert r.seconds < 10
    nobus = cli_env(bus.settings, LIAISON_TOPIC_PREFIX="nobus.")
    r = await cli("agency", "list", env=nobus)
    assert r.code == 1
    assert "provision the bus first" in r.one_error_line()
