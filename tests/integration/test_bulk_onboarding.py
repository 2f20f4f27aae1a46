"""Bulk onboarding on a secured broker: `liaison agency add --from-file` gives twenty agencies exactly
what `liaison agency add` gives one (topics, SCRAM user, ACLs, quotas, directory entry), and says so.

Uses the secured broker of `test_security` (a module of its own here) and its bus `sec.`.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka.admin import AdminClient

from liaison import onboarding
from liaison.core.settings import KafkaSettings
from liaison.security.admin import SecurityAdmin, librdkafka_config
from liaison.security.credentials import ADMIN, Credential, CredentialFiles, Endpoints
from liaison.security.quotas import QuotaAdmin, quota_defaults
from tests.integration.test_security import PREFIX, Cluster, _send
from tests.integration.test_security import cluster as secured_cluster  # noqa: F401  # a fixture, by this name
from tests.kafka_helpers import eventually

REFERENCE = "SE-SINGLE"
BULK = [f"SE-BULK{i:02d}" for i in range(20)]
OPTIONS: dict[str, Any] = {"groups": ["EU"], "clearances": ["DNA"]}


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> Cluster:
    found: Cluster = request.getfixturevalue("secured_cluster")
    return found


def _cli_env(cluster: Cluster, run_dir: Path) -> dict[str, str]:
    """The operator's environment: the admin's credential file, the bus's prefix, no other LIAISON_*."""
    cluster.files.write(Credential(ADMIN, cluster.admin_password),
                        Endpoints(cluster.bootstrap, "https://127.0.0.1:1", cluster.tls.ca_cert))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIAISON_")}
    env.update({"LIAISON_CREDENTIALS": str(cluster.files.path(ADMIN)), "LIAISON_TOPIC_PREFIX": PREFIX,
                "LIAISON_RUN_DIR": str(run_dir)})
    return env


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "liaison.cli.main", "agency", *args], capture_output=True,
                          text=True, env=env, timeout=180, check=False)


def _agencies_file(path: Path, codes: list[str]) -> Path:
    path.write_text(yaml.safe_dump({"agencies": [{"code": c, "name": f"Agency {c}", **OPTIONS}
                                                 for c in codes]}))
    return path


async def _what_the_broker_holds(settings: KafkaSettings, codes: list[str]) -> dict[str, Any]:
    """Per agency, everything onboarding made, with its code replaced by <CODE> so agencies compare."""
    topics = settings.topics
    users = {code: f"{PREFIX}{code}" for code in codes}
    admin = SecurityAdmin(settings)
    grants = await admin.grants_by_user(users.values())
    credentials = await admin.users_with_credentials(users.values())
    async with QuotaAdmin(settings) as quotas:
        quota = await quotas.describe_users(users.values())
    listed = await asyncio.to_thread(lambda: AdminClient(librdkafka_config(settings)).list_topics(timeout=15))
    entries = await onboarding.read_entries(settings)

    def same(code: str, text: str) -> str:
        return text.replace(code, "<CODE>")

    return {code: {
        "topics": {same(code, t): len(listed.topics[t].partitions) if t in listed.topics else 0
                   for t in topics.agency_topics(code)},
        "acls": sorted((g.resource, same(code, g.name), g.pattern, g.operation) for g in grants[users[code]]),
        "credential": users[code] in credentials,
        "quotas": quota[users[code]],
        "entry": {k: v for k, v in (entries.get(onboarding.agency_key(code)) or {}).items()
                  if k not in ("code", "name")},
    } for code in codes}


def test_bulk_onboarding_makes_what_the_single_path_makes(cluster: Cluster, tmp_path: Path) -> None:
    """20 agencies from one file (one of them onboarded singly before) equal the single path's agency."""
    settings = cluster.admin()
    env = _cli_env(cluster, tmp_path)
    secrets = tmp_path / "issued"
    single = _cli(env, "add", REFERENCE, "--country", "SE", "--name", f"Agency {REFERENCE}", "--group", "EU",
                  "--clearance", "DNA", "--credentials-dir", str(secrets))
    assert single.returncode == 0, single.stderr
    codes = [REFERENCE, *BULK]
    agencies = _agencies_file(tmp_path / "agencies.yaml", codes)

    bulk = _cli(env, "add", "--from-file", str(agencies), "--credentials-dir", str(secrets))
    assert bulk.returncode == 0, bulk.stderr
    lines = bulk.stdout.splitlines()
    assert lines[-1] == f"21 agencies from {agencies}: 20 added, 0 updated, 1 unchanged; 140 topics created"
    assert f"{REFERENCE}: nothing to change" in lines
    for code in BULK:
        assert f"{code}: created 7 topics, directory entry added" in lines
        assert f"  access: ACLs of User:{PREFIX}{code}: 15 added, 0 removed" in lines
        path = CredentialFiles(secrets).path(f"{PREFIX}{code}")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, code

    expected = quota_defaults()
    held = asyncio.run(eventually(lambda: _what_the_broker_holds(settings, codes),
                                  lambda held: all(h["quotas"] == expected for h in held.values()),
                                  timeout_s=15))
    reference = held[REFERENCE]
    assert reference["credential"]
    assert len(reference["acls"]) == 15
    assert set(reference["topics"].values()) == {1}
    assert reference["entry"] == {"country": "SE", "groups": ["EU"], "hub": False, "status": "ACTIVE",
                                  "clearances": ["DNA"]}
    assert {code: held[code] for code in BULK} == dict.fromkeys(BULK, reference)

    issued = CredentialFiles(secrets).read(f"{PREFIX}{BULK[-1]}")
    assert issued is not None
    agency = cluster.admin(sasl_username=issued.username, sasl_password=issued.password)
    asyncio.run(_send(agency, settings.topics.outbox("Alert", BULK[-1])))  # its credential logs in

    again = _cli(env, "add", "--from-file", str(agencies), "--json")
    assert again.returncode == 0, again.stderr
    assert [(o["code"], o["changed"], o["summary"]) for o in json.loads(again.stdout)] == [
        (code, False, "nothing to change") for code in codes]


def test_a_wrong_file_or_argument_is_one_line(cluster: Cluster, tmp_path: Path) -> None:
    """Unreadable, malformed or contradictory input: one line on stderr, no traceback, nothing made."""
    env = _cli_env(cluster, tmp_path)
    listed = _agencies_file(tmp_path / "ok.yaml", ["SE-WRONG1"])
    (tmp_path / "status.yaml").write_text("agencies:\n  - {code: SE-WRONG2, name: X, status: SUSPENDED}\n")
    (tmp_path / "twice.yaml").write_text("agencies:\n  - {code: SE-WRONG3, name: X}\n"
                                         "  - {code: SE-WRONG3, name: Y}\n")
    (tmp_path / "broken.yaml").write_text("agencies: [\n")
    (tmp_path / "group.yaml").write_text("agencies:\n  - {code: SE-WRONG4, name: X, groups: [NORDIC]}\n")
    cases = [
        (["--from-file", str(tmp_path / "missing.yaml")], 2, "cannot read agencies file"),
        (["--from-file", str(tmp_path / "broken.yaml")], 2, "not valid YAML or JSON"),
        (["--from-file", str(tmp_path / "status.yaml")], 2, "status is not set from a file"),
        (["--from-file", str(tmp_path / "twice.yaml")], 1, "SE-WRONG3 is listed twice"),
        (["--from-file", str(tmp_path / "group.yaml")], 1, "--group NORDIC is not a group"),
        (["SE-WRONG1", "--from-file", str(listed)], 2, "give no AGENCY"),
        ([], 2, "or --from-file FILE"),
        (["SE-WRONG1", "--country", "SE"], 2, "give an AGENCY with --country and --name"),
    ]
    for args, code, expected in cases:
        result = _cli(env, "add", *args)
        assert result.returncode == code, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, (args, result.stderr)
        assert expected in lines[0], (args, lines[0])
        assert "Traceback" not in result.stderr
    entries = asyncio.run(onboarding.read_entries(cluster.admin()))
    assert not [key for key in entries if "SE-WRONG" in key]
