"""The delegations service's Prometheus metrics, on an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class DelegationsMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.ended = Counter("liaison_delegations_ended_total",
                             "Officers whose broker access was ended.", ["why"], registry=registry)
        self.failures = Counter("liaison_delegations_failures_total",
                                "Attempts to end an officer's access that failed (retried).",
                                registry=registry)
        self.in_force = Gauge("liaison_delegations_officers_in_force", "Liaison officers in force now.",
                              registry=registry)
