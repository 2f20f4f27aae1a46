"""The local broker's settings and host hygiene, without starting Kafka: limits, argfiles, file modes."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from liaison.errors import LocalBrokerError
from liaison.kafka_admin import ConfigChange, config_drift
from liaison.local import paths
from liaison.local.broker import (
    BrokerConfig,
    BrokerLimits,
    BrokerSecurity,
    LocalBroker,
    argfile_text,
    server_properties,
)
from liaison.local.process import PRIVATE_UMASK, child_environ, is_alive, start_detached
from liaison.local.stack import SERVICES, LocalStack
from liaison.security.credentials import private_dir, write_private
from liaison.security.tls import DevTls
from liaison.topics import Topics

REAUTH_KEY = "listener.name.sasl_ssl.scram-sha-512.connections.max.reauth.ms"


@pytest.fixture(autouse=True)
def no_broker_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees the defaults unless it sets a `LIAISON_BROKER_*` variable itself."""
    for key in [k for k in os.environ if k.startswith("LIAISON_BROKER_")]:
        monkeypatch.delenv(key)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """The common 022 umask, under which anything not made private explicitly is world-readable."""
    was = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(was)


def _secured(tmp_path: Path, **limits: Any) -> BrokerConfig:
    return BrokerConfig(home=tmp_path / "kafka", security=BrokerSecurity(DevTls(tmp_path / "tls"),
                                                                        SecretStr("pw-123")),
                        limits=BrokerLimits(**limits))


def test_limits_have_their_documented_defaults(tmp_path: Path) -> None:
    """A login lasts an hour; 2,000 connections per address, 10,000 in all; a refused login waits 1 s."""
    props = server_properties(_secured(tmp_path))
    assert props[REAUTH_KEY] == "3600000"
    assert props["max.connections.per.ip"] == "2000"
    assert props["max.connections"] == "10000"
    assert props["connection.failed.authentication.delay.ms"] == "1000"
    assert "max.connections.per.ip.overrides" not in props
    plain = server_properties(BrokerConfig(home=tmp_path))
    assert plain["max.connections.per.ip"] == "2000"
    assert REAUTH_KEY not in plain  # no SASL listener to re-authenticate on


def test_limits_come_from_liaison_broker_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`LIAISON_BROKER_*` variables reach server.properties."""
    monkeypatch.setenv("LIAISON_BROKER_REAUTH_MS", "5000")
    monkeypatch.setenv("LIAISON_BROKER_MAX_CONNECTIONS_PER_IP", "50")
    monkeypatch.setenv("LIAISON_BROKER_MAX_CONNECTIONS_PER_IP_OVERRIDES", "10.0.0.7:400,router.example:900")
    monkeypatch.setenv("LIAISON_BROKER_MAX_CONNECTIONS", "3000")
    monkeypatch.setenv("LIAISON_BROKER_FAILED_AUTH_DELAY_MS", "2500")
    cfg = BrokerConfig(home=tmp_path, security=BrokerSecurity(DevTls(tmp_path / "tls"), SecretStr("x")))
    props = server_properties(cfg)
    assert props[REAUTH_KEY] == "5000"
    assert props["max.connections.per.ip"] == "50"
    assert props["max.connections.per.ip.overrides"] == "10.0.0.7:400,router.example:900"
    assert props["max.connections"] == "3000"
    assert props["connection.failed.authentication.delay.ms"] == "2500"


@pytest.mark.parametrize(("variable", "value"), [
    ("LIAISON_BROKER_MAX_CONNECTIONS_PER_IP", "0"),
    ("LIAISON_BROKER_REAUTH_MS", "an hour"),
    ("LIAISON_BROKER_MAX_CONNECTIONS_PER_IP_OVERRIDES", "10.0.0.7=400"),
    ("LIAISON_BROKER_FAILED_AUTH_DELAY_MS", "600000"),
])
def test_a_bad_limit_fails_in_one_line_naming_its_variable(monkeypatch: pytest.MonkeyPatch, variable: str,
                                                           value: str) -> None:
    """The operator reads which variable is wrong, not a pydantic report."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(LocalBrokerError, match=variable) as caught:
        BrokerConfig()
    assert "\n" not in str(caught.value)


def test_an_argfile_quotes_each_argument_and_refuses_what_it_cannot_quote() -> None:
    """One argument per line in double quotes; quotes, backslashes and line breaks are refused."""
    assert argfile_text(["format", "SCRAM-SHA-512=[name=a,password=x-y_z]"]) == \
        '"format"\n"SCRAM-SHA-512=[name=a,password=x-y_z]"\n'
    for bad in ('pass"word', "pass\\word", "pass\nword"):
        with pytest.raises(LocalBrokerError, match="quote"):
            argfile_text(["format", bad])


def test_the_storage_tool_gets_the_password_through_a_private_argfile_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """argv holds only `@<file>`; the file is 0600 while the tool runs and gone after; no LIAISON_* env."""
    cfg = _secured(tmp_path)
    broker = LocalBroker(cfg)
    private_dir(cfg.home)
    monkeypatch.setenv("LIAISON_SASL_PASSWORD", "callers-own-secret")
    seen: dict[str, Any] = {}

    def fake_run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        argfile = Path(argv[-1].removeprefix("@"))
        seen.update(argv=argv, env=kwargs["env"], umask=kwargs["umask"], argfile=argfile,
                    mode=stat.S_IMODE(argfile.stat().st_mode), text=argfile.read_text())
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    assert broker.format_storage()
    assert "pw-123" not in " ".join(seen["argv"])
    assert seen["argv"][-1].startswith("@")
    assert "-XX:-UsePerfData" in seen["argv"]  # no copy of the arguments in /tmp/hsperfdata_*
    assert '"kafka.tools.StorageTool"' in seen["text"]
    assert "password=pw-123]" in seen["text"]
    assert seen["mode"] == 0o600
    assert not seen["argfile"].exists()
    assert seen["umask"] == PRIVATE_UMASK
    assert not [k for k in seen["env"] if k.startswith("LIAISON_")]


def test_children_inherit_no_secret_from_the_callers_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Passwords, tokens and keys stay with the caller; named variables and prefixes are dropped too."""
    monkeypatch.setenv("LIAISON_SASL_PASSWORD", "s1")
    monkeypatch.setenv("GITHUB_TOKEN", "s2")
    monkeypatch.setenv("SOME_API_KEY", "s3")
    monkeypatch.setenv("PGPASSWORD", "s4")
    monkeypatch.setenv("LIAISON_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("LIAISON_BOOTSTRAP_SERVERS", "elsewhere:9092")
    env = child_environ(drop={"LIAISON_BOOTSTRAP_SERVERS"})
    assert not {"s1", "s2", "s3", "s4", "elsewhere:9092"} & set(env.values())
    assert env["LIAISON_LOG_LEVEL"] == "DEBUG"
    assert env["PATH"] == os.environ["PATH"]
    assert not [k for k in child_environ(drop_prefixes=("LIAISON_",)) if k.startswith("LIAISON_")]


def test_a_service_gets_its_credential_file_not_its_password(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """`liaison up` hands each service `LIAISON_CREDENTIALS=<0600 file>` and the policy it routes by."""
    monkeypatch.setenv("LIAISON_SASL_PASSWORD", "callers-own-secret")
    monkeypatch.setenv("LIAISON_SASL_USERNAME", "someone")
    policy = tmp_path / "policy.yaml"
    stack = LocalStack(BrokerConfig(home=tmp_path / "kafka"), run=tmp_path, secure=True, policy_file=policy)
    for spec in SERVICES:
        env = stack._env(spec)
        assert env["LIAISON_CREDENTIALS"] == str(stack.files.path(spec.principal))
        assert "LIAISON_SASL_PASSWORD" not in env
        assert "LIAISON_SASL_USERNAME" not in env
        assert env["LIAISON_POLICY_FILE"] == str(policy)


def test_private_folders_and_files_are_the_owners_only(tmp_path: Path, loose_umask: None) -> None:
    """Every missing level of a private folder is 0700; a private file is 0600, even one that was 0644."""
    deep = private_dir(tmp_path / "run" / "a" / "b")
    for level in (tmp_path / "run", tmp_path / "run" / "a", deep):
        assert stat.S_IMODE(level.stat().st_mode) == 0o700
    loose = deep / "f"
    loose.write_text("old")
    assert stat.S_IMODE(loose.stat().st_mode) == 0o644
    write_private(loose, "new")
    assert stat.S_IMODE(loose.stat().st_mode) == 0o600
    assert loose.read_text() == "new"
    assert sorted(p.name for p in deep.iterdir()) == ["f"]  # no temporary file left


def test_make_private_takes_group_and_other_bits_off_an_old_tree(tmp_path: Path, loose_umask: None) -> None:
    """A run directory from before keeps its owner's bits and loses everyone else's."""
    (tmp_path / "run" / "logs").mkdir(parents=True)
    (tmp_path / "run" / "logs" / "router.log").write_text("x")
    (tmp_path / "run" / "tool").write_text("#!/bin/sh\n")
    (tmp_path / "run" / "tool").chmod(0o755)
    assert paths.make_private(tmp_path / "run") == 4
    run = tmp_path / "run"
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [run, *run.rglob("*")]}
    assert modes == {"run": 0o700, "logs": 0o700, "router.log": 0o600, "tool": 0o700}
    assert paths.make_private(tmp_path / "run") == 0


def test_a_started_process_writes_private_files(tmp_path: Path, loose_umask: None) -> None:
    """Children run with umask 077; their log and pid files are 0600 in a 0700 folder."""
    log, pid_file = tmp_path / "logs" / "child.log", tmp_path / "child.pid"
    probe = "import os; mask = os.umask(0); os.umask(mask); print(oct(mask)); open('made', 'w')"
    pid = start_detached([sys.executable, "-c", probe], log_file=log, pid_file=pid_file, cwd=tmp_path)
    deadline = time.monotonic() + 30
    while is_alive(pid):
        assert time.monotonic() < deadline, "the child did not exit"
        time.sleep(0.05)
    assert log.read_text().strip() == "0o77"
    assert stat.S_IMODE((tmp_path / "made").stat().st_mode) == 0o600
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(pid_file.stat().st_mode) == 0o600


def test_config_drift_names_only_the_configs_the_bus_sets_that_differ() -> None:
    """Retention set by the policy is compared; configs the bus does not set are left to operators."""
    specs = Topics().bus_topics(audit_retention_ms=30 * 86_400_000)
    current = {
        "bus.audit": {"retention.ms": "-1", "max.message.bytes": "2000000"},
        "bus.directory": {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.10",
                          "segment.ms": "3600000"},
        "bus.queries": {"cleanup.policy": "delete", "min.cleanable.dirty.ratio": "0.1",
                        "segment.ms": "3600000"},
    }
    assert config_drift(specs, current) == [
        ConfigChange("bus.audit", "retention.ms", "-1", str(30 * 86_400_000)),
        ConfigChange("bus.queries", "cleanup.policy", "delete", "compact"),
    ]
    assert str(config_drift(specs, current)[0]) == "bus.audit: retention.ms -1 -> 2592000000"
