"""The Strimzi export without a cluster: names Kubernetes takes, exactly onboarding's ACLs and quotas,
the replication asked for, and the same text for the same bus whatever order its directory was read in."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import yaml

from liaison.directory import Agency, Directory
from liaison.errors import ConfigError
from liaison.provision import DEFAULT_DIRECTORY
from liaison.security.acls import SERVICES, agency_grants, service_grants, username
from liaison.security.credentials import ADMIN
from liaison.security.quotas import Quota
from liaison.strimzi import HEADER, ExportOptions, check_unique, export, resource_name, strimzi_user
from liaison.topics import Topics
from tests.strimzi_crds import user_acls

QUOTA = Quota(2 * 1024 * 1024, 8 * 1024 * 1024, 25.0)
PREFIX = "sec."
TOPICS = Topics(PREFIX)


def _directory(*extra: Agency) -> Directory:
    base = Directory.from_file(DEFAULT_DIRECTORY)
    return Directory([*base.agencies.values(), *extra], base.groups.values(), base.agreements.values())


def _by_name(resources: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["metadata"]["name"]: r for r in resources}


UNDERSCORE = Agency("SE-NOA_CYBER", "Polisen NOA, cybercrime")
SUSPENDED = Agency("SE-NOA", "Polisen NOA", status="SUSPENDED")


@pytest.fixture(scope="module")
def exported() -> Any:
    return export(TOPICS, _directory(UNDERSCORE, SUSPENDED), ExportOptions(agency_quota=QUOTA))


def test_every_user_has_exactly_the_acls_onboarding_grants(exported: Any) -> None:
    """Agencies and services: the KafkaUser's rules, read back as Kafka ACLs, are acls.py's grants."""
    users = _by_name(exported.users)
    directory = _directory(UNDERSCORE, SUSPENDED)
    expected = {(name, "agency", code): agency_grants(TOPICS, code) for code in directory.active_agencies()
                for name in [strimzi_user(TOPICS, code)]}
    expected |= {(f"{PREFIX}{service}", "service", service): service_grants(TOPICS, service)
                 for service in SERVICES}
    assert set(users) == {name for name, _, _ in expected} | {ADMIN}
    for (name, role, bus_name), grants in expected.items():
        user = users[name]
        assert user["metadata"]["annotations"] == {f"liaison/{role}": bus_name}
        assert user_acls(user) == {(f"User:{name}", g.resource, g.name, g.pattern, g.operation, "ALLOW", "*")
                                   for g in grants}, name
    assert sum(len(user_acls(u)) for u in exported.users) == sum(len(g) for g in expected.values())


def test_agencies_get_the_default_quotas_and_services_none(exported: Any) -> None:
    users = _by_name(exported.users)
    assert users["sec.fr-pn"]["spec"]["quotas"] == {"producerByteRate": 2 * 1024 * 1024,
                                                    "consumerByteRate": 8 * 1024 * 1024,
                                                    "requestPercentage": 25}
    assert [name for name, user in users.items() if "quotas" not in user["spec"]] == [
        ADMIN, *(f"{PREFIX}{service}" for service in SERVICES)]


def test_the_admin_is_the_only_super_user_and_has_no_acls(exported: Any) -> None:
    kafka = exported.cluster[0]
    assert kafka["spec"]["kafka"]["authorization"] == {"type": "simple", "superUsers": [ADMIN]}
    admin = _by_name(exported.users)[ADMIN]
    assert admin["spec"] == {"authentication": {"type": "scram-sha-512"}}


def test_names_kubernetes_refuses_are_mapped_and_the_real_name_kept(exported: Any) -> None:
    """Upper case and `_` become lower case and `-`; a KafkaTopic keeps its real name in topicName."""
    topics = _by_name(exported.topics)
    assert topics["sec.alerts.out.se-noa-cyber"]["spec"]["topicName"] == "sec.alerts.out.SE-NOA_CYBER"
    assert topics["sec.schemas"]["spec"]["topicName"] == "sec._schemas"
    assert "topicName" not in topics["sec.bus.audit"]["spec"]  # a valid name stays as it is
    assert "sec.se-noa-cyber" in _by_name(exported.users)
    assert len(topics) == len(exported.topics)
    codes = _directory(UNDERSCORE, SUSPENDED).agencies
    assert {t["spec"].get("topicName", n) for n, t in topics.items()} == {
        *(spec.name for spec in TOPICS.bus_topics()), "sec._schemas",
        *(topic for code in codes for topic in TOPICS.agency_topics(code))}


def test_a_suspended_agency_keeps_its_topics_but_has_no_user(exported: Any) -> None:
    topics = _by_name(exported.topics)
    assert all(resource_name(t) in topics for t in TOPICS.agency_topics(SUSPENDED.code))
    assert strimzi_user(TOPICS, SUSPENDED.code) not in _by_name(exported.users)


def test_topics_have_the_bus_settings_and_the_replication_asked_for() -> None:
    options = ExportOptions(replicas=5, min_insync=3, nodes=5, partitions=12, agency_partitions=2,
                            audit_retention_ms=86_400_000)
    exported = export(TOPICS, _directory(), options)
    topics = _by_name(exported.topics)
    assert topics["sec.bus.audit"]["spec"] == {"partitions": 12, "replicas": 5, "config": {
        "min.insync.replicas": "3", "retention.ms": "86400000"}}
    assert topics["sec.bus.directory"]["spec"]["config"] == {
        "cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1", "min.insync.replicas": "3",
        "segment.ms": "3600000"}
    assert topics["sec.receipts.in.fr-pn"]["spec"] == {"topicName": "sec.receipts.in.FR-PN", "partitions": 2,
                                                      "replicas": 5, "config": {"min.insync.replicas": "3"}}
    kafka, pool = exported.cluster
    assert kafka["spec"]["kafka"]["config"] == {
        "auto.create.topics.enable": False, "default.replication.factor": "5", "min.insync.replicas": "3",
        "offsets.topic.replication.factor": "5", "transaction.state.log.replication.factor": "5",
        "transaction.state.log.min.isr": "3", "share.coordinator.state.topic.replication.factor": "5",
        "share.coordinator.state.topic.min.isr": "3"}
    assert pool["spec"]["replicas"] == 5
    assert pool["spec"]["roles"] == ["controller", "broker"]


def test_every_resource_but_the_kafka_names_its_cluster_and_namespace() -> None:
    exported = export(TOPICS, _directory(), ExportOptions(cluster="bus-eu", namespace="police"))
    for doc in exported.documents():
        assert doc["metadata"]["namespace"] == "police"
        if doc["kind"] != "Kafka":
            assert doc["metadata"]["labels"]["strimzi.io/cluster"] == "bus-eu"
    assert exported.cluster[0]["metadata"]["name"] == "bus-eu"


def test_the_text_depends_on_the_directory_not_on_the_order_it_was_read_in() -> None:
    """Entries as the bus hands them over, in any order, give the file's export byte for byte."""
    from_file = _directory(UNDERSCORE)
    entries = dict(reversed(from_file.entries()))
    from_bus = Directory.from_entries(entries)
    first = export(TOPICS, from_file, ExportOptions()).to_yaml()
    assert export(TOPICS, from_bus, ExportOptions()).to_yaml() == first
    added = export(TOPICS, _directory(UNDERSCORE, Agency("SE-NFC", "NFC")), ExportOptions()).to_yaml()
    removed = set(first.splitlines(keepends=True)) - set(added.splitlines(keepends=True))
    assert removed == set(), "onboarding an agency only adds lines"


def test_the_text_is_the_same_with_or_without_libyaml() -> None:
    """A machine whose PyYAML lacks libyaml writes the same files: no diff from who exported."""
    options = ExportOptions(namespace="bus", external="route", agency_quota=QUOTA)
    exported = export(TOPICS, _directory(UNDERSCORE, SUSPENDED), options)
    pure = yaml.dump_all(exported.documents(), Dumper=yaml.SafeDumper, sort_keys=False, explicit_start=True,
                         allow_unicode=True, width=120)
    assert exported.to_yaml() == HEADER + pure


@pytest.mark.parametrize(("prefix", "expected"), [
    ("STAGING.", "must be a Kubernetes name on Strimzi"),
    ("a_b.", "must be a Kubernetes name on Strimzi"),
    ("sec", "must end with a dot"),
])
def test_a_prefix_that_cannot_start_a_user_name_is_refused(prefix: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        export(Topics(prefix), _directory(), ExportOptions())


@pytest.mark.parametrize(("changes", "expected"), [
    ({"min_insync": 4}, "--min-insync 4 is more than --replicas 3"),
    ({"replicas": 4}, "--replicas 4 is more than --nodes 3"),
    ({"cluster": "Liaison"}, "--cluster 'Liaison'"),
    ({"cluster": "a" * 41}, "at most 40 characters"),
    ({"namespace": "my_ns"}, "--namespace 'my_ns'"),
    ({"storage_size": "100GB"}, "not a Kubernetes quantity"),
    ({"agency_partitions": 0}, "at least 1"),
    ({"agency_quota": Quota(request_percentage=12.5)}, "requestPercentage is a whole number"),
])
def test_impossible_options_are_refused(changes: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(")):
        replace(ExportOptions(), **changes).checked()


def test_two_names_mapped_to_one_resource_name_are_refused() -> None:
    check_unique([("a.B", "a.b"), ("a.C", "a.c"), ("a.B", "a.b")], "topics")
    with pytest.raises(ConfigError, match=r"topics 'a\.B' and 'a\.b' would both be named 'a\.b'"):
        check_unique([("a.B", "a.b"), ("a.b", "a.b")], "topics")


@pytest.mark.parametrize(("name", "expected"), [
    ("bus.audit", "bus.audit"), ("sec.alerts.in.FR-PN", "sec.alerts.in.fr-pn"), ("_schemas", "schemas"),
    ("x.-a_.b", "x.a.b"), ("a" * 300, None), ("__", None),
])
def test_resource_names(name: str, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(ConfigError, match="has no Kubernetes resource name"):
            resource_name(name)
    else:
        assert resource_name(name) == expected


def test_a_strimzi_user_is_the_bus_user_as_kubernetes_names_it() -> None:
    assert strimzi_user(TOPICS, "FR-PN") == username(TOPICS, "FR-PN").lower() == "sec.fr-pn"
    assert strimzi_user(Topics(""), "INT-IPSG") == "int-ipsg"
