"""What `liaison export strimzi` writes is what a cluster with Strimzi's CRDs takes, and the check bites."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from liaison.directory import Directory
from liaison.provision import DEFAULT_DIRECTORY
from liaison.security.quotas import quota_defaults
from liaison.strimzi import API_VERSION, ExportOptions, export
from liaison.topics import Topics
from tests.strimzi_crds import STRIMZI_KINDS, crds, problems

Resource = dict[str, Any]

OPTIONS = {
    "production": ExportOptions(agency_quota=quota_defaults()),
    "namespaced, external, storage class, one node": ExportOptions(
        cluster="bus-eu", namespace="liaison-prod", replicas=1, min_insync=1, nodes=1, partitions=6,
        agency_partitions=2, storage_size="1.5Ti", storage_class="fast-ssd", external="loadbalancer",
        audit_retention_ms=86_400_000),
}


def _stream(prefix: str, options: ExportOptions) -> list[Resource]:
    """The export of deploy/directory.yaml as `kubectl apply` reads it: parsed back from its YAML."""
    text = export(Topics(prefix), Directory.from_file(DEFAULT_DIRECTORY), options).to_yaml()
    return list(yaml.safe_load_all(text))


@pytest.fixture(scope="module")
def resources() -> list[Resource]:
    return _stream("sec.", OPTIONS["production"])


def test_the_crds_serve_and_store_the_version_the_export_writes() -> None:
    assert sorted(crds()) == sorted(STRIMZI_KINDS)
    assert {crd.api_version for crd in crds().values()} == {API_VERSION}


@pytest.mark.parametrize("prefix", ["", "sec."])
@pytest.mark.parametrize("name", list(OPTIONS))
def test_every_resource_is_valid_for_strimzi(name: str, prefix: str) -> None:
    """Every document of the stream passes its CRD's schema, apiVersion and Kubernetes's metadata rules."""
    stream = _stream(prefix, OPTIONS[name])
    assert {doc["kind"] for doc in stream} == set(STRIMZI_KINDS)
    assert [(doc["kind"], doc["metadata"]["name"], problems(doc)) for doc in stream if problems(doc)] == []


def _last(resources: list[Resource], kind: str) -> Resource:
    """A copy of the last resource of `kind` (for KafkaUser, an agency's: ACLs and quotas)."""
    return copy.deepcopy([doc for doc in resources if doc["kind"] == kind][-1])


def _set(path: str, value: Any) -> Callable[[Resource], None]:
    def change(doc: Resource) -> None:
        *parents, last = path.split(".")
        node = doc
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[last] = value
    return change


def _drop(path: str) -> Callable[[Resource], None]:
    def change(doc: Resource) -> None:
        *parents, last = path.split(".")
        node = doc
        for key in parents:
            node = node[key]
        del node[last]
    return change


BROKEN = [
    ("KafkaUser", _set("apiVersion", "kafka.strimzi.io/v1beta2"), "apiVersion"),
    ("KafkaUser", _set("kind", "KafkaAcl"), "kind 'KafkaAcl'"),
    ("KafkaUser", _set("spec.authentification", {"type": "scram-sha-512"}),
     "'authentification' was unexpected"),
    ("KafkaUser", _set("spec.authentication.type", "scram-sha-256"), "'scram-sha-256' is not one of"),
    ("KafkaUser", _set("spec.authorization.acls.0.operations", ["Publish"]), "'Publish' is not one of"),
    ("KafkaUser", _set("spec.authorization.acls.0.resource.patternType", "prefixed"),
     "'prefixed' is not one"),
    ("KafkaUser", _drop("spec.authorization.acls"), "'acls' is a required property"),
    ("KafkaUser", _set("spec.quotas.requestPercentage", 12.5), "12.5 is not of type 'integer'"),
    ("KafkaUser", _set("metadata.name", "FR-PN"), "not a lower-case RFC 1123 name"),
    ("KafkaUser", _set("metadata.labels", {"app.kubernetes.io/part-of": "liaison"}),
     "needs the label strimzi.io/cluster"),
    ("KafkaTopic", _set("spec.partitions", 0), "0 is less than the minimum of 1"),
    ("KafkaTopic", _set("spec.replicas", "3"), "'3' is not of type 'integer'"),
    ("KafkaTopic", _set("spec.retention", "-1"), "'retention' was unexpected"),
    ("KafkaTopic", _set("metadata.name", "alerts.out.FR-PN"), "not a lower-case RFC 1123 name"),
    ("KafkaNodePool", _drop("spec.roles"), "'roles' is a required property"),
    ("KafkaNodePool", _set("spec.roles", ["voter"]), "'voter' is not one of"),
    ("KafkaNodePool", _set("spec.storage.type", "persistent"), "'persistent' is not one of"),
    ("Kafka", _set("spec.kafka.listeners.0.name", "TLS"), "does not match"),
    ("Kafka", _set("spec.kafka.listeners.0.port", 443), "443 is less than the minimum of 9092"),
    ("Kafka", _set("spec.kafka.authorization.type", "acl"), "'acl' is not one of"),
    ("Kafka", _set("spec.kafka.zookeeper", {"replicas": 3}), "'zookeeper' was unexpected"),
    ("Kafka", _set("metadata.namespace", "Prod"), "not a namespace name"),
]


@pytest.mark.parametrize(("kind", "change", "expected"), BROKEN, ids=[e for _, _, e in BROKEN])
def test_a_broken_resource_is_refused(resources: list[Resource], kind: str,
                                      change: Callable[[Resource], None], expected: str) -> None:
    """Each fault is caught, by the rule meant to catch it, next to the valid resource it came from."""
    doc = _last(resources, kind)
    assert problems(doc) == []
    change(doc)
    found = problems(doc)
    assert any(expected in problem for problem in found), found
