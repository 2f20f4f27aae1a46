"""`liaison provision` on an existing cluster: three secured nodes started on their own, as an
operator's cluster would be, with nothing of the bus on them; then the same command again."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType
from pydantic import SecretStr

from liaison.cluster_health import replication_report
from liaison.core.settings import KafkaSettings
from liaison.directory import Directory
from liaison.local.broker import BrokerConfig, BrokerSecurity, broker_answers, free_port
from liaison.local.cluster import LocalCluster
from liaison.provision import DEFAULT_DIRECTORY
from liaison.security.acls import SERVICES, agency_grants, service_grants, username
from liaison.security.admin import SecurityAdmin, librdkafka_config
from liaison.security.credentials import ADMIN
from liaison.security.tls import DevTls
from liaison.topics import Topics

pytestmark = pytest.mark.integration

ADMIN_PASSWORD = "an-operators-admin-password"


@pytest.fixture(scope="module")
def existing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaSettings]:
    home = Path(tmp_path_factory.mktemp("existing"))
    security = BrokerSecurity(DevTls(home / "tls"), SecretStr(ADMIN_PASSWORD))
    cluster = LocalCluster.of(BrokerConfig(home=home / "kafka", heap_mb=384, security=security), 3,
                              ports=[(free_port(), free_port()) for _ in range(3)])
    try:
        cluster.start(timeout_s=120)
        yield cluster.admin_settings()
    finally:
        cluster.stop()


def _provision(settings: KafkaSettings, *args: str, prefix: str = "") -> subprocess.CompletedProcess[str]:
    """The command as an operator runs it: admin credentials in LIAISON_* variables, nothing else."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIAISON_")}
    env["LIAISON_TOPIC_PREFIX"] = prefix
    env.update({"LIAISON_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
                "LIAISON_SECURITY_PROTOCOL": "SASL_SSL",
                "LIAISON_SASL_USERNAME": ADMIN, "LIAISON_SASL_PASSWORD": ADMIN_PASSWORD,
                "LIAISON_SSL_CAFILE": str(settings.ssl_cafile), "LIAISON_RUN_DIR": "/nonexistent"})
    return subprocess.run([sys.executable, "-m", "liaison.cli.main", "provision", *args], env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def test_provision_puts_the_bus_on_an_existing_cluster_and_a_second_run_changes_nothing(
        existing: KafkaSettings, tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    refused = _provision(existing)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "liaison: the cluster is secured: --credentials-dir DIR says where the new principals' credential "
        "files go (or --no-principals)"]

    first = _provision(existing, "--credentials-dir", str(secrets))
    assert first.returncode == 0, first.stderr
    directory = Directory.from_file(DEFAULT_DIRECTORY)
    topics = existing.topics
    wanted = [s.name for s in topics.bus_topics()]
    wanted += [t for agency in directory.agencies for t in topics.agency_topics(agency)]
    assert {f"topic created: {name}" for name in wanted} <= set(first.stdout.splitlines())
    assert "credential issued: liaison-router" in first.stdout
    assert "ACLs: " in first.stdout

    # Every topic with three replicas and min.insync.replicas 2, and all in sync.
    admin = AdminClient(librdkafka_config(existing))
    metadata = admin.list_topics(timeout=10).topics
    assert {len(p.replicas) for name in wanted for p in metadata[name].partitions.values()} == {3}
    described = admin.describe_configs([ConfigResource(ResourceType.TOPIC, name) for name in wanted])
    assert {f.result()["min.insync.replicas"].value for f in described.values()} == {"2"}
    assert asyncio.run(replication_report(existing)) == []

    # Each principal has exactly the bus's ACLs and a credential file (0600) that logs in.
    users = {username(topics, s): set(service_grants(topics, s)) for s in SERVICES}
    users |= {username(topics, a): set(agency_grants(topics, a)) for a, agency in directory.agencies.items()
              if agency.active}
    assert asyncio.run(SecurityAdmin(existing).grants_by_user(users)) == users
    fr = secrets / f"{username(topics, 'FR-PN')}.env"
    assert fr.is_file()
    assert stat.S_IMODE(fr.stat().st_mode) == 0o600
    assert asyncio.run(broker_answers(KafkaSettings(_env_file=fr)))  # type: ignore[call-arg]

    again = _provision(existing, "--credentials-dir", str(secrets))
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "nothing to change: the bus is provisioned"


def test_without_principals_it_provisions_topics_and_directory_and_touches_no_user(
        existing: KafkaSettings) -> None:
    """Where users come from elsewhere (Strimzi's KafkaUsers), a second bus on the cluster."""
    done = _provision(existing, "--no-principals", prefix="k8s.")
    assert done.returncode == 0, done.stderr
    assert "topic created: k8s.bus.routed" in done.stdout
    assert "directory entries written: " in done.stdout
    assert "credential" not in done.stdout
    assert "ACLs" not in done.stdout
    users = [username(Topics("k8s."), name) for name in (*SERVICES, "FR-PN")]
    assert asyncio.run(SecurityAdmin(existing).users_with_credentials(users)) == set()
