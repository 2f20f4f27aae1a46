"""Strimzi's CRDs (tests/contract/strimzi/) as a validator, and a KafkaUser's ACLs as Kafka ACL bindings.

A cluster checks a custom resource against its CRD's `openAPIV3Schema`, and `kubectl apply`
(`--validate=strict`, its default) refuses a field the schema does not name. jsonschema applies the
schema; `additionalProperties: false` on each object without `x-kubernetes-preserve-unknown-fields`
stands for the strictness, and `metadata`, which the API server checks itself, is checked here by its
rules. The CEL rules (`x-kubernetes-validations`) are not evaluated: the few in these CRDs concern
TLS users, rack awareness and metrics, which the export does not use.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft4Validator

CRD_DIR = Path(__file__).parent / "contract" / "strimzi"
CRD_FILES = ("040-Crd-kafka.yaml", "043-Crd-kafkatopic.yaml", "044-Crd-kafkauser.yaml",
             "045-Crd-kafkanodepool.yaml")
STRIMZI_KINDS = ("Kafka", "KafkaTopic", "KafkaUser", "KafkaNodePool")

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's reads the 330 kB Kafka CRD faster
_KEY_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


@dataclass(frozen=True)
class Crd:
    kind: str
    api_version: str  # group/version of the version served and stored
    validator: Draft4Validator


def _strict(node: Any) -> Any:
    """The schema with unknown fields refused wherever Kubernetes would not keep them."""
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _strict(value) for key, value in node.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@cache
def crds() -> dict[str, Crd]:
    """Kind -> its CRD, from the copies in tests/contract/strimzi/."""
    found = {}
    for name in CRD_FILES:
        crd = yaml.load((CRD_DIR / name).read_text(), Loader=_LOADER)  # noqa: S506  # a safe loader
        spec = crd["spec"]
        stored = [v for v in spec["versions"] if v["served"] and v["storage"]]
        assert len(stored) == 1, f"{name}: expected one version both served and stored"
        schema = _strict(copy.deepcopy(stored[0]["schema"]["openAPIV3Schema"]))
        Draft4Validator.check_schema(schema)
        kind = spec["names"]["kind"]
        found[kind] = Crd(kind, f"{spec['group']}/{stored[0]['name']}", Draft4Validator(schema))
    return found


def _key_problems(key: str, where: str) -> list[str]:
    prefix, _, name = key.rpartition("/")
    if (prefix and (len(prefix) > 253 or not _SUBDOMAIN.match(prefix))) or len(name) > 63 \
            or not _KEY_NAME.match(name):
        return [f"{where} key {key!r} is not a qualified name"]
    return []


def _metadata_problems(kind: str, metadata: Any) -> list[str]:
    """What the API server and the Strimzi operators would refuse in `metadata`."""
    if not isinstance(metadata, dict):
        return ["metadata is missing"]
    problems = []
    name = metadata.get("name")
    if not isinstance(name, str) or len(name) > 253 or not _SUBDOMAIN.match(name):
        problems.append(f"metadata.name {name!r} is not a lower-case RFC 1123 name")
    namespace = metadata.get("namespace")
    if namespace is not None and (not isinstance(namespace, str) or len(namespace) > 63
                                  or not _DNS_LABEL.match(namespace)):
        problems.append(f"metadata.namespace {namespace!r} is not a namespace name")
    labels = metadata.get("labels") or {}
    for key, value in labels.items():
        problems += _key_problems(key, "label")
        if not isinstance(value, str) or len(value) > 63 or (value and not _KEY_NAME.match(value)):
            problems.append(f"label {key} has an invalid value {value!r}")
    for key, value in (metadata.get("annotations") or {}).items():
        problems += _key_problems(key, "annotation")
        if not isinstance(value, str):
            problems.append(f"annotation {key} is not a string")
    if kind != "Kafka" and "strimzi.io/cluster" not in labels:
        problems.append(f"a {kind} needs the label strimzi.io/cluster, or no operator takes it")
    return problems


def problems(resource: Any) -> list[str]:
    """Why a cluster with these CRDs would refuse `resource`; empty when it would take it."""
    if not isinstance(resource, dict):
        return ["not a mapping"]
    crd = crds().get(resource.get("kind", ""))
    if crd is None:
        return [f"kind {resource.get('kind')!r} is none of {', '.join(STRIMZI_KINDS)}"]
    found = []
    if resource.get("apiVersion") != crd.api_version:
        found.append(f"apiVersion {resource.get('apiVersion')!r} is not {crd.api_version} "
                     "(served and stored)")
    found += [f"{'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
              for error in crd.validator.iter_errors(resource)]
    return found + _metadata_problems(crd.kind, resource.get("metadata"))


_RESOURCE_TYPES = {"topic": "TOPIC", "group": "GROUP", "transactionalId": "TRANSACTIONAL_ID",
                   "cluster": "CLUSTER"}
_PATTERN_TYPES = {"literal": "LITERAL", "prefix": "PREFIXED"}

Acl = tuple[str, str, str, str, str, str, str]
"""(principal, resource type, resource name, pattern type, operation, permission, host), in Kafka's words."""


def _operation(strimzi: str) -> str:
    """Strimzi's `DescribeConfigs` is Kafka's `DESCRIBE_CONFIGS`."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", strimzi).upper()


def user_acls(resource: dict[str, Any]) -> set[Acl]:
    """The Kafka ACLs the User Operator creates for a KafkaUser (SCRAM: principal `User:<name>`)."""
    principal = f"User:{resource['metadata']['name']}"
    rules = resource["spec"].get("authorization", {}).get("acls", [])
    return {(principal, _RESOURCE_TYPES[rule["resource"]["type"]], rule["resource"]["name"],
             _PATTERN_TYPES[rule["resource"].get("patternType", "literal")], _operation(operation),
             rule.get("type", "allow").upper(), rule.get("host", "*"))
            for rule in rules for operation in rule["operations"]}
