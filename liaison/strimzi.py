"""The bus as Strimzi resources: its Kafka cluster, a KafkaTopic per topic and a KafkaUser per principal.

On Kubernetes the Strimzi operators own what onboarding does on a plain cluster: the Topic Operator
creates the topics of the KafkaTopic resources, the User Operator the SCRAM credentials, ACLs and
quotas of the KafkaUser resources. This module writes those resources from the same sources as
onboarding: topic specs from `liaison.topics`, replication from `liaison.replication`, ACLs from
`liaison.security.acls`, quotas from `liaison.security.quotas`. Pure: no Kafka, no Kubernetes; the
CLI (`liaison export strimzi`) prints or writes what it returns, in a fixed order, so that
onboarding an agency is a readable diff.

Names. Kubernetes wants lower-case resource names (RFC 1123: `a-z`, `0-9`, `-`, `.`); agency codes
are upper case and may hold `_`. A KafkaTopic keeps the real name in `spec.topicName`. A KafkaUser
cannot: Strimzi names the Kafka user after the resource. So on Strimzi the user of agency `FR-PN`
is `fr-pn` (`_` becomes `-`; the bus's prefix must need no change): its ACLs are the agency's own,
granted to `User:fr-pn`. Agency codes are upper case with a single `-`, so no two agencies share
a name; `check_unique` confirms it for every export, topics included.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from liaison.directory import Directory
from liaison.errors import ConfigError
from liaison.kafka_admin import replicated
from liaison.replication import DEFAULT_FACTOR, Replication
from liaison.security.acls import (
    SERVICES,
    Grant,
    agency_grants,
    check_bus_prefix,
    schemas_topic,
    service_grants,
    username,
)
from liaison.security.credentials import ADMIN
from liaison.security.quotas import Quota
from liaison.topics import Topics, TopicSpec

API_VERSION = "kafka.strimzi.io/v1"
"""The version the Strimzi CRDs serve and store (tests/contract/strimzi/ holds them)."""
CLUSTER_LABEL = "strimzi.io/cluster"
PART_OF = {"app.kubernetes.io/part-of": "liaison"}
ANNOTATION = "liaison/{role}"
"""On a KafkaUser: `liaison/agency: FR-PN`, `liaison/service: liaison-router` or `liaison/admin`."""
NODE_POOL = "dual-role"
ExternalListener = Literal["loadbalancer", "nodeport", "route"]

_REFUSED = re.compile(r"[^a-z0-9-]")  # in one dot-separated part of a resource name (RFC 1123)
_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # RFC 1035: names Services and pods
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")  # RFC 1123 label
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")

_RESOURCE = {"TOPIC": "topic", "GROUP": "group", "TRANSACTIONAL_ID": "transactionalId", "CLUSTER": "cluster"}
_PATTERN = {"LITERAL": "literal", "PREFIXED": "prefix"}
_OPERATION = {"READ": "Read", "WRITE": "Write", "DESCRIBE": "Describe", "CREATE": "Create",
              "DESCRIBE_CONFIGS": "DescribeConfigs"}

Resource = dict[str, Any]


def resource_name(name: str) -> str:
    """A Kafka name as Kubernetes takes it: lower case, each other character it refuses as `-`, and no
    `-` or empty part at either end of a dot-separated part (`sec._schemas` becomes `sec.schemas`)."""
    parts = (_REFUSED.sub("-", part).strip("-") for part in name.lower().split("."))
    mapped = ".".join(part for part in parts if part)
    if not mapped or len(mapped) > 253:
        raise ConfigError(f"{name!r} has no Kubernetes resource name (at most 253 lower case letters, "
                          "digits, '-' and '.')")
    return mapped


def strimzi_user(topics: Topics, name: str) -> str:
    """The Kafka user of an agency (by code) or bus service on Strimzi: `username`, as Kubernetes names it.

    The prefix must need no mapping: the registry knows the bus's users by it (`<prefix>` + name).
    """
    check_bus_prefix(topics)
    if topics.prefix and resource_name(topics.prefix) + "." != topics.prefix:
        raise ConfigError(f"LIAISON_TOPIC_PREFIX={topics.prefix!r} must be a Kubernetes name on Strimzi "
                          "(lower case letters, digits, '-' and '.'): it starts every user name, and a "
                          "KafkaUser is named as its user")
    return resource_name(username(topics, name))


def check_unique(pairs: Iterable[tuple[str, str]], what: str) -> None:
    """(real name, resource name) pairs: two real names must never share a resource name."""
    seen: dict[str, str] = {}
    for real, mapped in pairs:
        if seen.setdefault(mapped, real) != real:
            raise ConfigError(f"{what} {seen[mapped]!r} and {real!r} would both be named {mapped!r}")


@dataclass(frozen=True)
class ExportOptions:
    """What the cluster looks like; the defaults are a production cluster of three nodes."""

    cluster: str = "liaison"
    namespace: str | None = None
    replicas: int = DEFAULT_FACTOR
    min_insync: int = 2
    nodes: int = 3
    partitions: int = 3  # of the bus's partitioned topics, as `liaison up` creates them
    agency_partitions: int = 1  # of each agency topic, as `liaison agency add` creates them
    audit_retention_ms: int = -1  # from the policy (`audit.retention_days`)
    storage_size: str = "100Gi"
    storage_class: str | None = None
    external: ExternalListener | None = None
    agency_quota: Quota = field(default_factory=Quota)

    def checked(self) -> ExportOptions:
        if len(self.cluster) > 40 or not _LABEL.match(self.cluster):
            raise ConfigError(f"--cluster {self.cluster!r}: a lower-case name of at most 40 characters "
                              "(letters, digits, '-'), starting with a letter")
        if self.namespace is not None and (len(self.namespace) > 63 or not _NAMESPACE.match(self.namespace)):
            raise ConfigError(f"--namespace {self.namespace!r} is not a Kubernetes namespace name")
        if min(self.replicas, self.min_insync, self.nodes, self.partitions, self.agency_partitions) < 1:
            raise ConfigError("--replicas, --min-insync, --nodes and the partitions must be at least 1")
        if self.min_insync > self.replicas:
            raise ConfigError(f"--min-insync {self.min_insync} is more than --replicas {self.replicas}: "
                              "no write with acks=all could ever succeed")
        if self.replicas > self.nodes:
            raise ConfigError(f"--replicas {self.replicas} is more than --nodes {self.nodes}")
        if not _QUANTITY.match(self.storage_size):
            raise ConfigError(f"--storage-size {self.storage_size!r} is not a Kubernetes quantity "
                              "(e.g. 100Gi)")
        percentage = self.agency_quota.request_percentage
        if percentage is not None and percentage != int(percentage):
            raise ConfigError(f"LIAISON_AGENCY_REQUEST_PERCENTAGE={percentage:g}: a KafkaUser's "
                              "requestPercentage is a whole number")
        return self

    @property
    def replication(self) -> Replication:
        return Replication(self.replicas, self.min_insync)


@dataclass(frozen=True)
class Principal:
    """One Kafka user of the bus and what onboarding gives it."""

    user: str  # on Strimzi (`strimzi_user`)
    role: Literal["admin", "service", "agency"]
    name: str  # what the bus calls it: the admin's user, a service's unprefixed name, an agency's code
    grants: tuple[Grant, ...] = ()
    quota: Quota = field(default_factory=Quota)

    @property
    def super_user(self) -> bool:
        return self.role == "admin"


def bus_topic_specs(topics: Topics, options: ExportOptions) -> list[TopicSpec]:
    """The bus's topics as `liaison up` creates them, and the registry's, as the registry creates it."""
    specs = topics.bus_topics(partitions=options.partitions, audit_retention_ms=options.audit_retention_ms)
    return [*specs, TopicSpec(schemas_topic(topics), 1, {"cleanup.policy": "compact"})]


def topic_specs(topics: Topics, directory: Directory, options: ExportOptions) -> list[TopicSpec]:
    """Bus topics first, then each agency's (any status: a suspended agency keeps its topics), by code."""
    specs = bus_topic_specs(topics, options)
    for code in sorted(directory.agencies):
        specs += topics.agency_topic_specs(code, partitions=options.agency_partitions)
    for code in sorted(directory.officers):  # a liaison officer has an agency's set of topics
        specs += topics.agency_topic_specs(code, partitions=options.agency_partitions)
    return specs


def principals(topics: Topics, directory: Directory, options: ExportOptions) -> list[Principal]:
    """The admin, the bus services, every ACTIVE agency by code, as `secure_principals` makes them,
    then the liaison officers in force (an officer acts with an agency's grants on its own topics).

    A suspended agency has no user: suspending takes its credential and ACLs away.
    """
    found = [Principal(ADMIN, "admin", ADMIN)]
    found += [Principal(strimzi_user(topics, s), "service", s,
                        tuple(service_grants(topics, s))) for s in SERVICES]
    found += [Principal(strimzi_user(topics, code), "agency", code,
                        tuple(agency_grants(topics, code)), options.agency_quota)
              for code in directory.active_agencies()]
    now = int(time.time() * 1000)  # an officer whose delegation ended has no user: export again then
    found += [Principal(strimzi_user(topics, code), "agency", code,
                        tuple(agency_grants(topics, code)), options.agency_quota)
              for code, officer in sorted(directory.officers.items()) if officer.in_force(now)]
    check_unique(((p.name, p.user) for p in found), "users")
    return found


def _metadata(name: str, options: ExportOptions, *, labelled: bool = True,
              annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if options.namespace:
        meta["namespace"] = options.namespace
    meta["labels"] = {CLUSTER_LABEL: options.cluster, **PART_OF} if labelled else dict(PART_OF)
    if annotations:
        meta["annotations"] = annotations
    return meta


def kafka_topic(spec: TopicSpec, options: ExportOptions) -> Resource:
    """The KafkaTopic of one topic; `spec.topicName` only when its name is not a resource name."""
    name = resource_name(spec.name)
    body: dict[str, Any] = {"topicName": spec.name} if name != spec.name else {}
    body |= {"partitions": spec.partitions, "replicas": options.replicas,
             "config": dict(sorted(replicated(spec, options.replication).config.items()))}
    return {"apiVersion": API_VERSION, "kind": "KafkaTopic", "metadata": _metadata(name, options),
            "spec": body}


def acl_rules(grants: Sequence[Grant]) -> list[dict[str, Any]]:
    """Strimzi ACL rules: one per resource, its operations together (each is one Kafka ACL)."""
    by_resource: dict[tuple[str, str, str], list[str]] = {}
    for g in sorted(grants):
        by_resource.setdefault((g.resource, g.name, g.pattern), []).append(_OPERATION[g.operation])
    return [{"type": "allow",
             "resource": {"type": _RESOURCE[resource], "name": name, "patternType": _PATTERN[pattern]},
             "operations": sorted(ops), "host": "*"}
            for (resource, name, pattern), ops in by_resource.items()]


def _quotas(quota: Quota) -> dict[str, int]:
    values = {"producerByteRate": quota.produce_bytes, "consumerByteRate": quota.fetch_bytes,
              "requestPercentage": quota.request_percentage}
    return {key: int(value) for key, value in values.items() if value is not None}


def kafka_user(principal: Principal, options: ExportOptions) -> Resource:
    """SCRAM-SHA-512 (the User Operator writes the password to a Secret named as the user), the ACLs."""
    spec: dict[str, Any] = {"authentication": {"type": "scram-sha-512"}}
    if not principal.super_user:
        spec["authorization"] = {"type": "simple", "acls": acl_rules(principal.grants)}
    if quotas := _quotas(principal.quota):
        spec["quotas"] = quotas
    annotations = {ANNOTATION.format(role=principal.role): principal.name}
    return {"apiVersion": API_VERSION, "kind": "KafkaUser",
            "metadata": _metadata(principal.user, options, annotations=annotations), "spec": spec}


def _listener(name: str, port: int, kind: str) -> dict[str, Any]:
    return {"name": name, "port": port, "type": kind, "tls": True,
            "authentication": {"type": "scram-sha-512"}}


def kafka_cluster(options: ExportOptions, super_users: Sequence[str]) -> list[Resource]:
    """The Kafka resource and its node pool: KRaft, every node controller and broker, SCRAM over TLS."""
    listeners = [_listener("tls", 9093, "internal")]
    if options.external:
        listeners.append(_listener("external", 9094, options.external))
    kafka = {
        "apiVersion": API_VERSION, "kind": "Kafka",
        "metadata": _metadata(options.cluster, options, labelled=False, annotations={
            "strimzi.io/node-pools": "enabled", "strimzi.io/kraft": "enabled"}),
        "spec": {
            "kafka": {
                "listeners": listeners,
                "authorization": {"type": "simple", "superUsers": list(super_users)},
                # topics come from KafkaTopic resources only; internal ones replicated as the bus's
                "config": {"auto.create.topics.enable": False, **options.replication.broker_properties()},
            },
            "entityOperator": {"topicOperator": {}, "userOperator": {}},
        },
    }
    storage: dict[str, Any] = {"type": "persistent-claim", "size": options.storage_size, "deleteClaim": False}
    if options.storage_class:
        storage["class"] = options.storage_class
    pool = {"apiVersion": API_VERSION, "kind": "KafkaNodePool", "metadata": _metadata(NODE_POOL, options),
            "spec": {"replicas": options.nodes, "roles": ["controller", "broker"], "storage": storage}}
    return [kafka, pool]


@dataclass(frozen=True)
class Export:
    """Every resource of one bus, by kind, each list in its fixed order."""

    cluster: list[Resource]
    topics: list[Resource]
    users: list[Resource]

    FILES = ("kafka.yaml", "topics.yaml", "users.yaml")

    def documents(self) -> list[Resource]:
        return [*self.cluster, *self.topics, *self.users]

    def to_yaml(self) -> str:
        """Everything as one stream: the cluster, then the topics, then the users."""
        return to_yaml(self.documents())

    def files(self) -> dict[str, str]:
        """File name -> YAML text, one file per kind (applied in this order by `kubectl apply -f DIR`)."""
        return dict(zip(self.FILES, (to_yaml(self.cluster), to_yaml(self.topics), to_yaml(self.users)),
                        strict=True))


HEADER = ("# Written by `liaison export strimzi` from the directory and the policy: change those and\n"
          "# export again rather than editing this file.\n")


DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
"""libyaml's when PyYAML has it: the same text (a test compares them), seven times faster."""


def to_yaml(resources: Sequence[Resource]) -> str:
    """A multi-document YAML stream, keys in the order written, after a header saying where it comes from."""
    return HEADER + yaml.dump_all(resources, Dumper=DUMPER, sort_keys=False, explicit_start=True,
                                  allow_unicode=True, width=120)


def export(topics: Topics, directory: Directory, options: ExportOptions) -> Export:
    """The bus of `topics` with the agencies of `directory`, as Strimzi resources."""
    options = options.checked()
    users = principals(topics, directory, options)
    specs = topic_specs(topics, directory, options)
    check_unique(((s.name, resource_name(s.name)) for s in specs), "topics")
    return Export(kafka_cluster(options, [p.user for p in users if p.super_user]),
                  [kafka_topic(spec, options) for spec in specs],
                  [kafka_user(p, options) for p in users])
