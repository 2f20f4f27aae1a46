"""`liaison send | inbox | receipts` through the entry point, against a real bus."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import pytest

from liaison.local.paths import REPO_ROOT
from liaison.sdk import alert, envelope
from tests.bus_harness import Bus
from tests.integration.test_cli_common import CLOSED_PORT, cli, cli_env, module_bus

pytestmark = pytest.mark.asyncio(loop_scope="module")
bus = module_bus()


async def test_send_query_from_flags_and_wait_for_receipts(bus: Bus) -> None:
    """A query from flags is sent; --wait prints the router's receipt for each recipient."""
    r = await cli("send", "query", "--from", "FR-PN", "--to", "DE-BKA,IT-PS", "--restricted", "IT",
                  "--case", "CASE-CLI-1", "--tlp", "AMBER", "--question", "Known to you?", "--wait",
                  "--json", settings=bus.settings)
    assert r.code == 0, r.err
    sent = r.json()
    assert sent["topic"] == bus.topics.outbox("Query", "FR-PN")
    by = {x["recipient"]: x for x in sent["receipts"]}
    assert by["DE-BKA"]["kind"] == "DELIVERED"
    assert by["IT-PS"]["kind"] == "DENIED"
    assert by["IT-PS"]["reason_code"] == "RESTRICTED_BY_ORIGINATOR"

    inbox = await cli("inbox", "DE-BKA", "--type", "query", "--json", settings=bus.settings)
    assert inbox.code == 0, inbox.err
    ids = [m["record"]["envelope"]["message_id"] for m in inbox.json()]
    assert sent["message_id"] in ids
    assert all(m["type"] == "Query" for m in inbox.json())

    alerts = await cli("inbox", "DE-BKA", "--type", "alert", "--json", settings=bus.settings)
    assert sent["message_id"] not in [m["record"]["envelope"]["message_id"] for m in alerts.json()]

    table = await cli("inbox", "de-bka", settings=bus.settings)  # lower case is accepted
    assert table.code == 0, table.err
    assert sent["message_id"] in table.out
    assert "Known to you?" in table.out

    receipts = await cli("receipts", "FR-PN", "--about", sent["message_id"], settings=bus.settings)
    assert receipts.code == 0, receipts.err
    assert "RESTRICTED_BY_ORIGINATOR" in receipts.out
    assert "DELIVERED" in receipts.out


async def test_send_from_a_yaml_file_with_flags_overriding(bus: Bus, tmp_path: Path) -> None:
    """--file holds builder fields (YAML); a flag given too wins."""
    msg = tmp_path / "alert.yaml"
    msg.write_text("type: alert\nfrom: NL-KLPD\nto: [DE-BKA]\ncase: CASE-CLI-FILE\ntlp: GREEN\n"
                   "subject: {summary: 'Stolen van, plate AB-123-C', kind: VEHICLE}\n"
                   "colour: BLUE\naction: LOCATE\n")
    r = await cli("send", "alert", "--file", str(msg), "--tlp", "AMBER", "--wait", "--json",
                  settings=bus.settings)
    assert r.code == 0, r.err
    assert [x["kind"] for x in r.json()["receipts"]] == ["DELIVERED"]
    inbox = await cli("inbox", "DE-BKA", "--type", "alert", "--json", settings=bus.settings)
    found = [m["record"] for m in inbox.json()
             if m["record"]["envelope"]["message_id"] == r.json()["message_id"]]
    assert found[0]["envelope"]["tlp"] == "AMBER"
    assert found[0]["subject"]["kind"] == "VEHICLE"


async def test_inbox_with_a_group_commits_what_it_printed(bus: Bus) -> None:
    """With --group the second read starts after what the first one printed; without, nothing moves."""
    for i in range(2):
        await bus.send("Alert", alert(envelope("FR-GN", to=["ES-CNP"], case_id=f"CASE-GRP-{i}")))
    assert len(await bus.read(bus.topics.inbox("Alert", "ES-CNP"), 2)) == 2  # both routed

    first = await cli("inbox", "ES-CNP", "--group", "desk", "--json", settings=bus.settings)
    assert first.code == 0, first.err
    assert [m["record"]["envelope"]["case_id"] for m in first.json()] == ["CASE-GRP-0", "CASE-GRP-1"]
    assert first.json()[0]["group"] == f"{bus.settings.topic_prefix}ES-CNP.desk"
    again = await cli("inbox", "ES-CNP", "--group", "desk", settings=bus.settings)
    assert again.code == 0, again.err
    group = f"{bus.settings.topic_prefix}ES-CNP.desk"
    assert again.out.strip() == f"nothing in the inbox of ES-CNP for group {group}"
    everything = await cli("inbox", "ES-CNP", "--json", settings=bus.settings)
    assert len(everything.json()) == 2  # no group: read from the beginning, nothing committed


async def test_follow_prints_new_messages_until_ctrl_c(bus: Bus) -> None:
    """--follow prints what arrives later, and Ctrl-C ends it cleanly (exit 0, nothing on stderr)."""
    await bus.send("Alert", alert(envelope("FR-PN", to=["PL-KGP"], case_id="CASE-FOLLOW-0")))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "liaison.cli.main", "inbox", "PL-KGP", "--follow", "--json", cwd=REPO_ROOT,
        env=cli_env(bus.settings), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stderr is not None
        first = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
        assert first["record"]["envelope"]["case_id"] == "CASE-FOLLOW-0"
        await bus.send("Alert", alert(envelope("FR-PN", to=["PL-KGP"], case_id="CASE-FOLLOW-1")))
        second = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
        assert second["record"]["envelope"]["case_id"] == "CASE-FOLLOW-1"
        proc.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(proc.wait(), 15)
        assert code == 0
        assert (await proc.stderr.read()).decode().strip() == ""
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_wrong_arguments_give_one_line_and_exit_2(bus: Bus) -> None:
    """A bad agency code, a missing question or reply target, an unknown option: one line each."""
    cases = [  # more in tests/unit/test_cli_args.py, in-process
        (["send", "query", "--from", "FR_PN", "--to", "DE-BKA", "--question", "?"], "FR_PN"),
        (["send", "reply", "--from", "DE-BKA", "--outcome", "HIT"], "--answers"),
        (["inbox", "DE-BKA", "--colour", "red"], "No such option"),
        (["send", "alert", "--file", "/nonexistent/alert.yaml"], "cannot read"),
    ]
    results = await asyncio.gather(*(cli(*args, settings=bus.settings) for args, _ in cases))
    for (args, expected), r in zip(cases, results, strict=True):
        assert r.code == 2, (args, r.out, r.err)
        assert expected in r.one_error_line(), (args, r.err)


async def test_an_agency_without_topics_is_named(bus: Bus) -> None:
    """Sending for an agency that is not onboarded says how to onboard it."""
    r = await cli("send", "query", "--from", "SE-NOA", "--to", "DE-BKA", "--question", "?",
                  settings=bus.settings)
    assert r.code == 1
    assert "liaison agency add SE-NOA" in r.one_error_line()


async def test_a_broker_that_is_down_gives_one_line_quickly(bus: Bus) -> None:
    """Every bus command fails fast, in one line, when nothing listens at the bootstrap address."""
    env = cli_env(bus.settings, LIAISON_BOOTSTRAP_SERVERS=CLOSED_PORT)
    commands = [["send", "query", "--from", "FR-PN", "--to", "DE-BKA", "--question", "?"],
                ["inbox", "FR-PN", "--group", "desk"], ["receipts", "FR-PN"]]
    results = await asyncio.gather(*(cli(*args, env=env) for args in commands))
    for args, r in zip(commands, results, strict=True):
        assert r.code == 1, (args, r.err)
        assert "no Kafka broker answers at 127.0.0.1:1" in r.one_error_line(), args
        assert r.seconds < 10, args


async def test_a_registry_that_is_down_gives_one_line(bus: Bus) -> None:
    """The schema registry unreachable: one line naming the setting to check."""
    env = cli_env(bus.settings, LIAISON_REGISTRY_URL=f"http://{CLOSED_PORT}")
    r = await cli("inbox", "FR-PN", env=env)
    assert r.code == 1
    assert "LIAISON_REGISTRY_URL" in r.one_error_line()
