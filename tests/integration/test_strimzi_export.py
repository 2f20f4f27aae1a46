"""The Strimzi export against a real secured broker: its KafkaUsers hold exactly the ACLs (and quotas)
that onboarding set there, and its KafkaTopics are the topics the bus created.

Agencies are onboarded as `liaison agency add` onboards them and given their principals as `make up`
does; one is suspended. Then the broker's ACLs, every one of them, are read back and compared as a set
with the ACLs the User Operator would create from the exported KafkaUsers. The only difference
allowed is the documented one: on Strimzi a user is named as its KafkaUser, in lower case.

Uses the secured broker of `test_security` (a module of its own here) and its bus `sec.`.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka.admin import (
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ConfigResource,
    ResourcePatternType,
    ResourceType,
)

from liaison import onboarding
from liaison.cli.policy import DEFAULT_POLICY
from liaison.core.settings import KafkaSettings
from liaison.directory import Directory
from liaison.policy import load_policy
from liaison.security.admin import librdkafka_config
from liaison.security.bus import secure_principals
from liaison.security.credentials import Endpoints
from liaison.security.quotas import Quota, QuotaAdmin, quota_defaults
from liaison.strimzi import ExportOptions, export
from tests.integration.test_bulk_onboarding import _cli_env
from tests.integration.test_security import PREFIX, Cluster
from tests.integration.test_security import cluster as secured_cluster  # noqa: F401  # a fixture, by this name
from tests.kafka_helpers import eventually
from tests.strimzi_crds import Acl, problems, user_acls

NEW = [onboarding.AgencyRequest("SE-NOA", "Polisen NOA", groups=("EU",)),
       onboarding.AgencyRequest("SE-NOA_CYBER", "Polisen NOA, cybercrime", groups=("EU",),
                                clearances=("DNA",)),
       onboarding.AgencyRequest("NO-KRIPOS", "Kripos")]
SUSPENDED = "NO-KRIPOS"


@pytest.fixture(scope="module")
def onboarded(request: pytest.FixtureRequest) -> tuple[Cluster, Directory]:
    """The module's secured broker after `_onboard`, and the directory the bus then holds."""
    cluster: Cluster = request.getfixturevalue("secured_cluster")
    return cluster, _onboard(cluster)


def _admin(settings: KafkaSettings) -> AdminClient:
    return AdminClient(librdkafka_config(settings))


def broker_acls(settings: KafkaSettings) -> set[Acl]:
    """Every ACL the broker holds, of every principal, in Kafka's words."""
    every = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                             AclOperation.ANY, AclPermissionType.ANY)
    admin = _admin(settings)  # kept until the answer is in: a collected client cancels its requests
    bindings: Any = admin.describe_acls(every, request_timeout=15).result()
    return {(b.principal, b.restype.name, b.name, b.resource_pattern_type.name, b.operation.name,
             b.permission_type.name, b.host) for b in bindings}


def as_on_strimzi(acl: Acl) -> Acl:
    """The same ACL granted to the user as Strimzi names it: lower case, `_` as `-`."""
    kind, _, user = acl[0].partition(":")
    return (f"{kind}:{user.lower().replace('_', '-')}", *acl[1:])


def _onboard(cluster: Cluster) -> Directory:
    """Onboard NEW as `liaison agency add` does, give every active agency its principal as `make up`
    does, suspend one as `liaison agency suspend` does; the directory as the bus holds it then."""
    settings = cluster.admin()
    access = onboarding.access_control(settings, cluster.files, quota_defaults=quota_defaults())
    asyncio.run(onboarding.onboard_many(settings, NEW, access=access))
    directory = onboarding.current_directory(asyncio.run(onboarding.read_entries(settings)))
    endpoints = Endpoints(cluster.bootstrap, "", cluster.tls.ca_cert)
    asyncio.run(secure_principals(settings, cluster.files, endpoints, directory.active_agencies()))
    asyncio.run(onboarding.set_status(settings, SUSPENDED, "SUSPENDED", access=access))
    return onboarding.current_directory(asyncio.run(onboarding.read_entries(settings)))


def test_exported_users_hold_exactly_the_acls_and_quotas_onboarding_set(
        onboarded: tuple[Cluster, Directory]) -> None:
    cluster, directory = onboarded
    settings = cluster.admin()
    suspended = directory.agency(SUSPENDED)
    assert suspended is not None
    assert suspended.status == "SUSPENDED"
    assert {"SE-NOA", "SE-NOA_CYBER"} <= set(directory.active_agencies())
    exported = export(settings.topics, directory, ExportOptions(agency_quota=quota_defaults()))
    assert [problems(doc) for doc in exported.users if problems(doc)] == []

    gone = f"User:{PREFIX}{SUSPENDED}"
    held = asyncio.run(eventually(lambda: asyncio.to_thread(broker_acls, settings),
                                  lambda acls: not any(acl[0] == gone for acl in acls), timeout_s=15))
    assert len({acl[0] for acl in held}) == len({as_on_strimzi(acl)[0] for acl in held})  # no two users merge
    granted = {acl for user in exported.users for acl in user_acls(user)}
    assert {as_on_strimzi(acl) for acl in held} == granted
    cyber = ("User:sec.se-noa-cyber", "GROUP", "sec.SE-NOA_CYBER.", "PREFIXED", "READ", "ALLOW", "*")
    assert cyber in granted
    assert len(granted) == len(held) > 15 * len(directory.active_agencies())

    agencies = {user["metadata"]["annotations"]["liaison/agency"]: user for user in exported.users
                if "liaison/agency" in user["metadata"]["annotations"]}
    assert sorted(agencies) == list(directory.active_agencies())

    async def quotas() -> dict[str, Quota]:
        async with QuotaAdmin(settings) as admin:
            return await admin.describe_users(f"{PREFIX}{code}" for code in agencies)

    on_broker = asyncio.run(quotas())
    for code, user in agencies.items():
        wanted = user["spec"]["quotas"]
        assert on_broker[f"{PREFIX}{code}"] == Quota(wanted["producerByteRate"], wanted["consumerByteRate"],
                                                     wanted["requestPercentage"]), code


def test_exported_topics_are_the_topics_the_bus_created(onboarded: tuple[Cluster, Directory]) -> None:
    """Names, partitions and the configs the bus sets (the KafkaTopic adds min.insync.replicas)."""
    cluster, directory = onboarded
    settings = cluster.admin()
    exported = {t["spec"].get("topicName", t["metadata"]["name"]): t["spec"] for t in export(
        settings.topics, directory, ExportOptions(audit_retention_ms=-1)).topics}
    admin = _admin(settings)
    listed = admin.list_topics(timeout=15).topics
    on_broker = {name: len(meta.partitions) for name, meta in listed.items() if name.startswith(PREFIX)}
    assert set(on_broker) == set(exported) - {f"{PREFIX}_schemas"}  # the registry creates its own here
    assert {name: spec["partitions"] for name, spec in exported.items() if name in on_broker} == on_broker

    resources = [ConfigResource(ResourceType.TOPIC, name) for name in on_broker]
    described: Any = admin.describe_configs(resources, request_timeout=15)
    for resource, future in described.items():
        wanted = {k: v for k, v in exported[resource.name]["config"].items() if k != "min.insync.replicas"}
        entries = future.result()
        assert {k: entries[k].value for k in wanted} == wanted, resource.name


def test_the_cli_exports_the_directory_the_bus_holds(onboarded: tuple[Cluster, Directory],
                                                     tmp_path: Path) -> None:
    """Without --directory, the agencies come from `bus.directory`: the same resources as the library's."""
    cluster, directory = onboarded
    settings = cluster.admin()
    command = [sys.executable, "-m", "liaison.cli.main", "export", "strimzi", "--namespace", "bus"]
    result = subprocess.run(command, capture_output=True, text=True, env=_cli_env(cluster, tmp_path),
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    options = ExportOptions(namespace="bus", agency_quota=quota_defaults(),
                            audit_retention_ms=load_policy(DEFAULT_POLICY).audit_retention_ms)
    assert list(yaml.safe_load_all(result.stdout)) == export(settings.topics, directory, options).documents()
