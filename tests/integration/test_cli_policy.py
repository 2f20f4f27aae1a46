"""`liaison policy explain` through the entry point: decisions and rules, with no broker at all."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.integration.test_cli_common import CLOSED_PORT, cli, cli_env

NO_BUS = cli_env(LIAISON_BOOTSTRAP_SERVERS=CLOSED_PORT, LIAISON_REGISTRY_URL=f"http://{CLOSED_PORT}")
QUERY_ID = "11111111-1111-4111-8111-111111111111"


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


async def test_explain_shows_each_recipient_and_the_rule(tmp_path: Path) -> None:
    """Per recipient the decision and the deciding rule; nothing is sent (no broker is reachable)."""
    msg = _write(tmp_path, "q.yaml", "type: query\nfrom: FR-PN\nto: [DE-BKA, IT-PS]\nrestricted: [IT]\n"
                 "tlp: AMBER\nquestion: Known to you?\n")
    r = await cli("policy", "explain", msg, env=NO_BUS)
    assert r.code == 0, r.err
    assert "nothing sent" in r.out
    lines = {line.split()[0]: line for line in r.out.splitlines() if line.strip()}
    assert "DELIVERED" in lines["DE-BKA"]
    assert "DENIED" in lines["IT-PS"]
    assert "RESTRICTED_BY_ORIGINATOR" in lines["IT-PS"]

    data = (await cli("policy", "explain", msg, "--json", env=NO_BUS)).json()
    by = {x["recipient"]: x for x in data["recipients"]}
    assert by["IT-PS"]["outcome"] == "DENY"
    assert by["IT-PS"]["reason"]
    assert by["DE-BKA"]["outcome"] == "DELIVER"


async def test_explain_as_another_agency_and_a_reply_after_its_query(tmp_path: Path) -> None:
    """--as names the outbox (a spoof is refused whole); --after routes the answered query first."""
    query = _write(tmp_path, "q.json", json.dumps({"type": "query", "message_id": QUERY_ID, "from": "FR-PN",
                                                   "to": ["DE-BKA"], "question": "Known?"}))
    reply = _write(tmp_path, "r.yaml", f"from: DE-BKA\nanswers: {QUERY_ID}\noutcome: HIT\n")

    spoof, alone, after, verbose = await asyncio.gather(
        cli("policy", "explain", query, "--as", "IT-PS", "--json", env=NO_BUS),
        cli("policy", "explain", reply, "--type", "reply", env=NO_BUS),
        cli("policy", "explain", reply, "--type", "reply", "--after", query, "--json", env=NO_BUS),
        cli("policy", "explain", reply, "-t", "reply", "--after", query, "-v", env=NO_BUS))
    assert spoof.json()["rejection"]["code"] == "SPOOFED_ORIGINATOR"
    assert alone.code == 0, alone.err
    assert "UNKNOWN_CORRELATION" in alone.out
    assert "--after" in alone.out
    assert [(x["recipient"], x["outcome"], x["via"]) for x in after.json()["recipients"]] == [
        ("FR-PN", "DELIVER", "asker")]
    assert "reply-has-correlation" in verbose.out


async def test_explain_refuses_bad_input_in_one_line(tmp_path: Path) -> None:
    """No type, a missing file, a wrong directory file, a field the type does not have."""
    untyped = _write(tmp_path, "m.yaml", "from: FR-PN\nto: [DE-BKA]\n")
    odd = _write(tmp_path, "o.yaml",
                 "type: query\nfrom: FR-PN\nto: [DE-BKA]\nquestion: Known?\ncolour: RED\n")
    cases = [
        (["policy", "explain", untyped], "--type alert|query|reply"),
        (["policy", "explain", str(tmp_path / "none.yaml"), "-t", "query"], "cannot read"),
        (["policy", "explain", untyped, "-t", "alert", "--directory", untyped], "unknown key(s) from"),
        (["policy", "explain", odd], "unknown field(s) for a Query: colour"),
        (["policy", "explain", untyped, "-t", "telegram"], "telegram"),
    ]
    results = await asyncio.gather(*(cli(*args, env=NO_BUS) for args, _ in cases))
    for (args, expected), r in zip(cases, results, strict=True):
        assert r.code == 2, (args, r.out, r.err)
        assert expected in r.one_error_line(), (args, r.err)


async def test_a_file_that_is_not_yaml_names_the_line(tmp_path: Path) -> None:
    """YAML errors point at the line to fix."""
    bad = _write(tmp_path, "bad.yaml", "type: query\nfrom: FR-PN\nquestion: ?\n")
    r = await cli("policy", "explain", bad, env=NO_BUS)
    assert r.code == 2
    assert "not valid YAML: line 3" in r.one_error_line()
