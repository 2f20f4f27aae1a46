"""Topic names of the bus (DESIGN.md, Topics) and the settings each kind of topic gets.

All names can carry a prefix (`LIAISON_TOPIC_PREFIX`), so that several buses (staging and
production, or one per test) can share a Kafka cluster without seeing each other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property

from liaison.schemas import MESSAGE_TYPES

AGENCY_CODE = re.compile(r"^[A-Z]{2,3}-[A-Z0-9]{2,16}$")
"""`CC-NAME`: ISO 3166 alpha-2 country (or INT / EU for organisations), then the agency."""

FAMILIES = {"Alert": "alerts", "Query": "queries", "Reply": "replies"}
TYPES_BY_FAMILY = {family: name for name, family in FAMILIES.items()}

COMPACTED = {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1",
             "segment.ms": str(3_600_000)}


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int = 1
    config: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Topics:
    """Every topic name of one bus."""

    prefix: str = ""

    @property
    def audit(self) -> str:
        return f"{self.prefix}bus.audit"

    @property
    def deadletter(self) -> str:
        return f"{self.prefix}bus.deadletter"

    @property
    def directory(self) -> str:
        return f"{self.prefix}bus.directory"

    @property
    def queries(self) -> str:
        return f"{self.prefix}bus.queries"

    @property
    def consents(self) -> str:
        return f"{self.prefix}bus.consents"

    @property
    def routed(self) -> str:
        """Compacted: per routed message, who sent it, its handling terms and who received it."""
        return f"{self.prefix}bus.routed"

    @property
    def casegroups(self) -> str:
        """Compacted: per case group formed on the bus, its members, invitations and history."""
        return f"{self.prefix}bus.casegroups"

    def outbox(self, message_type: str, agency: str) -> str:
        return f"{self.prefix}{FAMILIES[message_type]}.out.{agency}"

    def inbox(self, message_type: str, agency: str) -> str:
        return f"{self.prefix}{FAMILIES[message_type]}.in.{agency}"

    def receipts(self, agency: str) -> str:
        return f"{self.prefix}receipts.in.{agency}"

    @cached_property
    def outbox_pattern(self) -> str:
        return rf"^{re.escape(self.prefix)}(alerts|queries|replies)\.out\.[A-Z0-9-]+$"

    @cached_property
    def _outbox_re(self) -> re.Pattern[str]:
        return re.compile(self.outbox_pattern)

    def parse_outbox(self, topic: str) -> tuple[str, str] | None:
        """(message type, owning agency) of an outbox topic; None for any other topic."""
        if not self._outbox_re.match(topic):
            return None
        family, _, agency = topic[len(self.prefix):].split(".", 2)
        return TYPES_BY_FAMILY[family], agency

    @cached_property
    def _owned_re(self) -> re.Pattern[str]:
        agency = r"(alerts|queries|replies)\.(out|in)\.[A-Z0-9-]+|receipts\.in\.[A-Z0-9-]+"
        bus = "|".join(re.escape(t.name[len(self.prefix):]) for t in self.bus_topics())
        return re.compile(rf"^{re.escape(self.prefix)}({agency}|{bus}|_schemas)$")

    def owns(self, topic: str) -> bool:
        """Whether `topic` is one of this bus's: its own, an agency's, or the registry's."""
        return bool(self._owned_re.match(topic))

    def agency_topics(self, agency: str) -> list[str]:
        """Every topic that onboarding creates for one agency."""
        return ([self.outbox(t, agency) for t in MESSAGE_TYPES]
                + [self.inbox(t, agency) for t in MESSAGE_TYPES] + [self.receipts(agency)])

    def bus_topics(self, *, partitions: int = 3, audit_retention_ms: int = -1) -> list[TopicSpec]:
        """The bus's own topics. The audit trail is kept forever unless the policy says otherwise."""
        return [
            TopicSpec(self.audit, partitions, {"retention.ms": str(audit_retention_ms)}),
            TopicSpec(self.deadletter, 1, {"retention.ms": str(30 * 24 * 3_600_000)}),
            TopicSpec(self.directory, 1, COMPACTED),
            TopicSpec(self.queries, partitions, COMPACTED),
            TopicSpec(self.consents, 1, COMPACTED),
            TopicSpec(self.routed, partitions, COMPACTED),
            TopicSpec(self.casegroups, 1, COMPACTED),
        ]

    def agency_topic_specs(self, agency: str, *, partitions: int = 1) -> list[TopicSpec]:
        return [TopicSpec(name, partitions) for name in self.agency_topics(agency)]
