"""`make demo` end to end, as the README promises it: a secured local stack and the whole scenario.

The stack runs in a temporary folder on free ports, so it never meets a stack started by `make up`.
"""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest

from liaison.cli.output import Out
from liaison.demo import play
from liaison.local.broker import BrokerConfig, free_port
from liaison.local.stack import SERVICES, LocalStack
from liaison.onboarding import access_control


def test_the_demo_runs_secured_and_the_broker_refuses_what_acls_do_not_allow(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stack = LocalStack(BrokerConfig(home=tmp_path / "kafka", port=free_port(), controller_port=free_port()),
                       run=tmp_path, secure=True, registry_port=free_port(),
                       metrics_ports={spec.name: free_port() for spec in SERVICES})
    try:
        rows = stack.up(timeout_s=90)
        assert all(row.pid is not None for row in rows), rows
        assert stack.registry_url.startswith("https://")
        access = access_control(stack.admin_settings(), stack.files)
        asyncio.run(play(stack.admin_settings(), Out(), stack.agency_settings, access=access))
    finally:
        stopped = stack.down()
    assert stopped == ["delegations", "deadlines", "router", "registry", "kafka"]
    out = capsys.readouterr().out

    assert "RESTRICTED_BY_ORIGINATOR" in out  # the sharing rules were at work...
    assert "BAD_MAGIC_BYTE" in out
    assert "SPOOFED_ORIGINATOR" in out
    assert out.count("refused by broker") == 4  # ...and the broker's ACLs, the revoked officer's too
    assert "ALLOWED" not in out
    for code in ("CASE_GROUP_PROPOSED", "CASE_GROUP_JOINED", "NOT_A_GROUP_MEMBER", "CASE_GROUP_CLOSED",
                 "OFFICER_COPY", "SPOC_COPY_ART_4_1", "SPOC_COPY_WAIVED", "MATCH_PENDING",
                 "MATCH_NOT_CONFIRMED", "MATCH_CONFIRMED"):  # case-based cooperation, all four rules
        assert code in out, code
    assert "liaison officer FR-PN-BOGOTA" in out
    assert "...and the held request: delivered to DE-BKA" in out

    secrets = sorted((tmp_path / "secrets").glob("*.env"))
    assert {p.stem for p in secrets} >= {"liaison-admin", "liaison-router", "liaison-registry", "FR-PN"}
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in secrets)
    passwords = [line.split("=", 1)[1] for p in secrets for line in p.read_text().splitlines()
                 if line.startswith("LIAISON_SASL_PASSWORD=")]
    logs = "".join(p.read_text(errors="replace") for p in [*(tmp_path / "logs").glob("*.log"),
                                                              tmp_path / "kafka" / "kafka.log"])
    assert "router running" in logs
    assert [p for p in passwords if p in logs or p in out] == []
