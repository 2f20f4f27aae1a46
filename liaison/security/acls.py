"""Who may do what on the bus, as data: the ACLs of an agency and of each bus service.

Pure (no Kafka): the tables are unit-tested, printed in the README, and applied by
`liaison.security.admin`. Each principal gets exactly its table; whatever is not in it the broker
denies, since a secured cluster runs `StandardAuthorizer` with `allow.everyone.if.no.acl.found=false`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from liaison.schemas import MESSAGE_TYPES
from liaison.topics import FAMILIES, Topics

Resource = Literal["TOPIC", "GROUP", "TRANSACTIONAL_ID", "CLUSTER"]
Pattern = Literal["LITERAL", "PREFIXED"]
Operation = Literal["READ", "WRITE", "DESCRIBE", "CREATE", "DESCRIBE_CONFIGS"]

ROUTER = "liaison-router"
DEADLINES = "liaison-deadlines"
REGISTRY = "liaison-registry"
SERVICES = (REGISTRY, ROUTER, DEADLINES)
"""Service principals, in start order; the admin (`credentials.ADMIN`) is the only super user."""


@dataclass(frozen=True, order=True)
class Grant:
    """One ALLOW ACL for one principal, from any host."""

    resource: Resource
    name: str
    pattern: Pattern
    operation: Operation

    def describe(self) -> str:
        star = "*" if self.pattern == "PREFIXED" else ""
        return f"{self.operation} on {self.resource.lower().replace('_', ' ')} {self.name}{star}"


def principal(username: str) -> str:
    return f"User:{username}"


def _topic(name: str, *ops: Operation, pattern: Pattern = "LITERAL") -> list[Grant]:
    return [Grant("TOPIC", name, pattern, op) for op in ops]


def agency_grants(topics: Topics, code: str) -> list[Grant]:
    """Write its outboxes, read its inboxes and receipts, read groups `<CODE>.*`, and nothing else."""
    grants = [g for t in MESSAGE_TYPES for g in _topic(topics.outbox(t, code), "WRITE", "DESCRIBE")]
    grants += [g for t in MESSAGE_TYPES for g in _topic(topics.inbox(t, code), "READ", "DESCRIBE")]
    grants += _topic(topics.receipts(code), "READ", "DESCRIBE")
    grants.append(Grant("GROUP", f"{code}.", "PREFIXED", "READ"))
    return sorted(grants)


def router_grants(topics: Topics, *, group: str = ROUTER, transactional_prefix: str = ROUTER) -> list[Grant]:
    """Read every outbox, write every inbox and receipts topic, keep its state, commit in transactions."""
    p = topics.prefix
    grants = [g for f in FAMILIES.values() for g in _topic(f"{p}{f}.out.", "READ", "DESCRIBE",
                                                             pattern="PREFIXED")]
    grants += [g for f in [*FAMILIES.values(), "receipts"]
               for g in _topic(f"{p}{f}.in.", "WRITE", "DESCRIBE", pattern="PREFIXED")]
    grants += [g for t in (topics.audit, topics.deadletter) for g in _topic(t, "WRITE", "DESCRIBE")]
    grants += [g for t in (topics.routed, topics.queries, topics.consents)
               for g in _topic(t, "READ", "WRITE", "DESCRIBE")]
    grants += _topic(topics.directory, "READ", "DESCRIBE")
    grants.append(Grant("GROUP", group, "LITERAL", "READ"))
    grants += [Grant("TRANSACTIONAL_ID", f"{transactional_prefix}.", "PREFIXED", op)
               for op in ("WRITE", "DESCRIBE")]
    return sorted(grants)


def deadlines_grants(topics: Topics, *, transactional_id: str = DEADLINES) -> list[Grant]:
    """Keep `bus.queries` and send reminders and overdue notices to receipts topics."""
    grants = _topic(topics.queries, "READ", "WRITE", "DESCRIBE")
    grants += _topic(f"{topics.prefix}receipts.in.", "WRITE", "DESCRIBE", pattern="PREFIXED")
    grants += [Grant("TRANSACTIONAL_ID", transactional_id, "LITERAL", op) for op in ("WRITE", "DESCRIBE")]
    return sorted(grants)


def registry_grants(schemas_topic: str = "_schemas") -> list[Grant]:
    """Its own compacted topic only, which it may create and whose cleanup policy it checks."""
    return sorted(_topic(schemas_topic, "READ", "WRITE", "DESCRIBE", "DESCRIBE_CONFIGS", "CREATE"))


def service_grants(topics: Topics, service: str) -> list[Grant]:
    """The table of one bus service principal, with each service's default ids and groups."""
    tables = {ROUTER: router_grants(topics), DEADLINES: deadlines_grants(topics),
              REGISTRY: registry_grants()}
    return tables[service]


def markdown_rows(who: str, grants: list[Grant]) -> list[str]:
    """README table rows of one principal: one row per resource, its operations together."""
    by_resource: dict[tuple[str, str, str], list[str]] = {}
    for g in grants:
        by_resource.setdefault((g.resource, g.name, g.pattern), []).append(g.operation)
    return [f"| {who} | {resource.lower().replace('_', ' ')} | `{name}{'*' if pattern == 'PREFIXED' else ''}`"
            f" | {', '.join(sorted(ops))} |" for (resource, name, pattern), ops in by_resource.items()]


def readme_table() -> list[str]:
    """The least-privilege table of the README, from the code that applies it."""
    topics = Topics()
    return [*markdown_rows("`<AGENCY>`", agency_grants(topics, "<AGENCY>")),
            *markdown_rows(f"`{ROUTER}`", router_grants(topics)),
            *markdown_rows(f"`{DEADLINES}`", deadlines_grants(topics)),
            *markdown_rows(f"`{REGISTRY}`", registry_grants())]
