"""Who may do what on the bus, as data: the ACLs of an agency and of each bus service.

Pure (no Kafka): the tables are unit-tested, printed in the README, and applied by
`liaison.security.admin`. Each principal gets exactly its table; whatever is not in it the broker
denies, since a secured cluster runs `StandardAuthorizer` with `allow.everyone.if.no.acl.found=false`.

Several buses may share a cluster (`LIAISON_TOPIC_PREFIX`): every user name, consumer group and
transactional id of a bus carries its prefix, as its topics do, so that agency FR-PN of bus `a.`
(`User:a.FR-PN`) and of bus `b.` (`User:b.FR-PN`) share no credential, ACL or quota. `username` is
the one place that names a principal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from liaison.errors import ConfigError
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


def username(topics: Topics, name: str) -> str:
    """The Kafka user of an agency (by its code) or of a bus service on the bus of `topics`.

    The bus's prefix comes first, as in its topic names: `a.FR-PN`, `a.liaison-router`.
    """
    return f"{topics.prefix}{name}"


def check_bus_prefix(topics: Topics) -> None:
    """On a secured cluster a prefix must end with a dot, so two buses' users never share a name.

    Agency codes and service names have no dot, so the last dot of a user name ends its prefix;
    without it, bus `X` would name FR-PN `XFR-PN`, which is agency XFR-PN of an unprefixed bus.
    """
    if topics.prefix and not topics.prefix.endswith("."):
        raise ConfigError(f"LIAISON_TOPIC_PREFIX={topics.prefix!r} must end with a dot on a secured cluster "
                          f"(e.g. {topics.prefix}.): it also prefixes the bus's user names")


def principal(user: str) -> str:
    return f"User:{user}"


def agency_group_prefix(topics: Topics, code: str) -> str:
    """Every consumer group of an agency starts with this: `<prefix><CODE>.` (the SDK adds a name)."""
    return f"{username(topics, code)}."


def _topic(name: str, *ops: Operation, pattern: Pattern = "LITERAL") -> list[Grant]:
    return [Grant("TOPIC", name, pattern, op) for op in ops]


def agency_grants(topics: Topics, code: str) -> list[Grant]:
    """Write its outboxes, read its inboxes and receipts, read groups `<prefix><CODE>.*`, and nothing else."""
    grants = [g for t in MESSAGE_TYPES for g in _topic(topics.outbox(t, code), "WRITE", "DESCRIBE")]
    grants += [g for t in MESSAGE_TYPES for g in _topic(topics.inbox(t, code), "READ", "DESCRIBE")]
    grants += _topic(topics.receipts(code), "READ", "DESCRIBE")
    grants.append(Grant("GROUP", agency_group_prefix(topics, code), "PREFIXED", "READ"))
    return sorted(grants)


def router_grants(topics: Topics, *, group: str | None = None,
                  transactional_prefix: str | None = None) -> list[Grant]:
    """Read every outbox, write every inbox and receipts topic, keep its state, commit in transactions.

    Its consumer group and transactional ids are named after its user (`<prefix>liaison-router`)
    unless given.
    """
    p = topics.prefix
    group = group or username(topics, ROUTER)
    transactional_prefix = transactional_prefix or username(topics, ROUTER)
    grants = [g for f in FAMILIES.values() for g in _topic(f"{p}{f}.out.", "READ", "DESCRIBE",
                                                             pattern="PREFIXED")]
    grants += [g for f in [*FAMILIES.values(), "receipts"]
               for g in _topic(f"{p}{f}.in.", "WRITE", "DESCRIBE", pattern="PREFIXED")]
    grants += [g for t in (topics.audit, topics.deadletter) for g in _topic(t, "WRITE", "DESCRIBE")]
    grants += [g for t in (topics.routed, topics.consents, topics.casegroups)
               for g in _topic(t, "READ", "WRITE", "DESCRIBE")]
    grants += _topic(topics.queries, "WRITE", "DESCRIBE")  # a query's base and answers; it never reads them
    grants += _topic(topics.directory, "READ", "DESCRIBE")
    grants.append(Grant("GROUP", group, "LITERAL", "READ"))
    grants += [Grant("TRANSACTIONAL_ID", f"{transactional_prefix}.", "PREFIXED", op)
               for op in ("WRITE", "DESCRIBE")]
    return sorted(grants)


def deadlines_grants(topics: Topics, *, transactional_id: str | None = None) -> list[Grant]:
    """Keep `bus.queries` and send reminders and overdue notices to receipts topics."""
    transactional_id = transactional_id or username(topics, DEADLINES)
    grants = _topic(topics.queries, "READ", "WRITE", "DESCRIBE")
    grants += _topic(f"{topics.prefix}receipts.in.", "WRITE", "DESCRIBE", pattern="PREFIXED")
    grants += [Grant("TRANSACTIONAL_ID", transactional_id, "LITERAL", op) for op in ("WRITE", "DESCRIBE")]
    return sorted(grants)


def registry_grants(schemas_topic: str = "_schemas") -> list[Grant]:
    """Its own compacted topic only, which it may create and whose cleanup policy it checks."""
    return sorted(_topic(schemas_topic, "READ", "WRITE", "DESCRIBE", "DESCRIBE_CONFIGS", "CREATE"))


def schemas_topic(topics: Topics) -> str:
    """The registry's topic on the bus of `topics` (`LIAISON_REGISTRY_TOPIC` must name it)."""
    return f"{topics.prefix}_schemas"


def service_grants(topics: Topics, service: str) -> list[Grant]:
    """The table of one bus service (by its unprefixed name), with ids and groups named after its user."""
    tables = {ROUTER: router_grants(topics), DEADLINES: deadlines_grants(topics),
              REGISTRY: registry_grants(schemas_topic(topics))}
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
