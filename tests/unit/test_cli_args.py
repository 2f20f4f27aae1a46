"""The CLI's arguments without a broker: help with examples, one-line usage errors, message building."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from liaison.audit_view import EVER, Window
from liaison.cli.main import app
from liaison.cli.messages import build_message, message_from, parse_time, time_ago
from liaison.cli.policy import infer_type
from liaison.codec import Codec
from liaison.schemas import MESSAGE_TYPES
from liaison.sdk.builders import MessageError
from tests.offline_codec import offline_codec

COMMANDS = [
    ["agency", "add"], ["agency", "list"], ["agency", "show"], ["agency", "suspend"], ["agency", "resume"],
    ["agency", "remove"], ["send", "alert"], ["send", "query"], ["send", "reply"], ["inbox"], ["receipts"],
    ["case"], ["trace"], ["deadletter", "list"], ["deadletter", "show"], ["deadletter", "replay"],
    ["policy", "explain"],
]


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), env={"LIAISON_BOOTSTRAP_SERVERS": "127.0.0.1:1"})


@pytest.fixture(scope="module")
def codec() -> Codec:
    return offline_codec(MESSAGE_TYPES)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help_with_an_example(command: list[str]) -> None:
    """`--help` works without a broker and shows an example."""
    result = _invoke(*command, "--help")
    assert result.exit_code == 0, result.stderr
    assert "Example: liaison " + command[0] in result.stdout


@pytest.mark.parametrize(("args", "expected"), [
    (["inbox", "FR_PN"], "'FR_PN' is not an agency code"),
    (["inbox"], "Missing argument 'AGENCY'"),
    (["inbox", "FR-PN", "--timeout", "0"], "--timeout"),
    (["receipts", "FR-PN", "--follow", "--bogus"], "No such option: --bogus"),
    (["agency", "add", "XX-TEST", "--country", "XX", "--name", "X"], "neither an ISO 3166"),
    (["agency", "frobnicate"], "No such command 'frobnicate'"),
    (["send", "query", "--from", "FR-PN", "--to", "DE-BKA"], "--question"),
    (["send", "query", "--from", "FR-PN", "--to", "DE-BKA", "--question", "?", "--deadline", "soon"],
     "'soon' is not a time"),
    (["send", "alert", "--to", "DE-BKA"], "--from"),
    (["send", "reply", "--from", "DE-BKA", "--answers", "x", "--outcome", "REFUSED"], "refusal ground"),
    (["policy", "explain", "/nonexistent.yaml", "--type", "query"], "cannot read"),
    (["policy", "explain", "/nonexistent.yaml", "--as", "nobody"], "not an agency code"),
    (["case", "CASE-1", "--since", "yesterday"], "Invalid value for '--since': 'yesterday' is not a time"),
    (["trace", "1b4e28ba", "--until", "2025-13-01"], "'2025-13-01' is not a time"),
    (["case", "CASE-1", "--since", "1d", "--until", "2d"], "is after --until"),
])
def test_wrong_arguments_give_one_line_and_exit_2(args: list[str], expected: str) -> None:
    """Usage errors are one line on stderr, starting `liaison:`, and never reach the broker."""
    result = _invoke(*args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("liaison: ")
    assert expected in lines[0]


def test_builder_fields_make_records_that_fit_the_schemas(codec: Codec) -> None:
    """Flags and file fields (with aliases, lists as text, relative times) become valid records."""
    alert = build_message("Alert", {"from": "fr-pn", "to": "DE-BKA, IT-PS", "case": "C-1", "tlp": "TLP:GREEN",
                                    "subject": {"summary": "Stolen van", "kind": "vehicle"}, "color": "blue",
                                    "valid_until": "2030-01-01"})
    assert alert["envelope"]["addressing"]["agencies"] == ["DE-BKA", "IT-PS"]
    assert alert["envelope"]["tlp"] == "GREEN"
    assert alert["subject"]["kind"] == "VEHICLE"
    query = build_message("Query", {"from": "FR-PN", "groups": ["EU"], "question": "Known?",
                                    "criteria": ["name=Doe", "born=1980"], "deadline": "8h"})
    assert query["criteria"] == {"name": "Doe", "born": "1980"}
    assert query["deadline"] > (time.time() + 7 * 3600) * 1000
    reply = build_message("Reply", {"from": "DE-BKA", "answers": query["envelope"]["message_id"],
                                    "outcome": "no_hit", "information": "Not known."})
    assert reply["envelope"]["correlation_id"] == query["envelope"]["message_id"]
    for name, record in (("Alert", alert), ("Query", query), ("Reply", reply)):
        assert codec.decode(codec.encode(name, record)) == (name, record)


def test_builder_fields_are_checked_by_name() -> None:
    """Unknown fields, a missing sender and a wrong subject are refused with what to fix."""
    with pytest.raises(MessageError, match=r"unknown field.*outcome"):
        build_message("Query", {"from": "FR-PN", "to": ["DE-BKA"], "question": "?", "outcome": "HIT"})
    with pytest.raises(MessageError, match="--from"):
        build_message("Alert", {"to": ["DE-BKA"]})
    with pytest.raises(MessageError, match="summary"):
        build_message("Alert", {"from": "FR-PN", "to": ["DE-BKA"], "subject": {"kind": "PERSON"}})


def test_a_full_record_gets_its_id_and_creation_time(codec: Codec) -> None:
    """A full record is taken as written; only the envelope's id and time are filled in."""
    record = build_message("Query", {"from": "FR-PN", "to": ["DE-BKA"], "question": "?"})
    del record["envelope"]["message_id"], record["envelope"]["created_at"]
    done = build_message("Query", {"type": "query", **record})
    assert done["envelope"]["message_id"]
    assert codec.encode("Query", done)


def test_file_fields_are_overridden_by_flags(tmp_path: Path) -> None:
    """The file gives the fields; a flag given too wins; a full record cannot be changed by flags."""
    path = tmp_path / "q.yaml"
    path.write_text("type: query\nfrom: FR-PN\nto: [DE-BKA]\ntlp: GREEN\nquestion: Known?\n")
    record = message_from("Query", path, {"tlp": "RED", "case": None, "to": []})
    assert record["envelope"]["tlp"] == "RED"
    assert record["envelope"]["addressing"]["agencies"] == ["DE-BKA"]
    with pytest.raises(MessageError, match="says type query, but this command sends Alert"):
        message_from("Alert", path, {})
    full = tmp_path / "full.json"
    full.write_text('{"envelope": {"originator": "FR-PN"}, "question": "?"}')
    with pytest.raises(MessageError, match="full record"):
        message_from("Query", full, {"tlp": "RED"})


def test_times() -> None:
    """Epoch ms, ISO 8601 (UTC unless said) and delays from now."""
    assert parse_time(1_700_000_000_000, "t") == 1_700_000_000_000
    assert parse_time("1700000000000", "t") == 1_700_000_000_000
    assert parse_time("2024-01-01T00:00:00", "t") == 1_704_067_200_000
    assert abs(parse_time("30m", "t") - (time.time() + 1800) * 1000) < 5000  # type: ignore[operator]
    with pytest.raises(MessageError, match="48h"):
        parse_time("tomorrow", "deadline")


def test_times_back_from_now() -> None:
    """--since / --until: ISO 8601 dates and times (UTC unless said), or durations back from now."""
    now = time.time() * 1000
    assert abs(time_ago("30d") - (now - 30 * 86_400_000)) < 5000
    assert abs(time_ago("12h") - (now - 12 * 3_600_000)) < 5000
    assert time_ago("2024-01-01") == 1_704_067_200_000
    assert time_ago("2024-01-01T01:00+01:00") == 1_704_067_200_000
    window = Window(time_ago("2024-01-01"), time_ago("2024-01-02"))
    assert window.holds(1_704_067_200_000)
    assert window.holds(1_704_153_600_000)  # both ends are in it
    assert not window.holds(1_704_067_199_999)
    assert not window.holds(1_704_153_600_001)
    assert EVER.holds(0)


def test_message_type_from_flag_file_or_fields() -> None:
    """--type, then the file's `type:`, then the fields decide; a contradiction is refused."""
    assert infer_type({"type": "queries"}, None, "f") == "Query"
    assert infer_type({}, "REPLY", "f") == "Reply"
    assert infer_type({"outcome": "HIT"}, None, "f") == "Reply"
    assert infer_type({"colour": "RED"}, None, "f") == "Alert"
    with pytest.raises(MessageError, match="--type says alert"):
        infer_type({"type": "query"}, "alert", "f")
    with pytest.raises(MessageError, match="which kind"):
        infer_type({"from": "FR-PN"}, None, "f")
