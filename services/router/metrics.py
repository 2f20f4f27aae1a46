"""The router's Prometheus metrics, on an injected registry (labels with few values only)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class RouterMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.routed = Counter("liaison_router_messages_total", "Routing decisions per recipient.",
                              ["type", "outcome"], registry=registry)
        self.denials = Counter("liaison_router_denials_total", "Denials and holds by reason code.",
                               ["reason"], registry=registry)
        self.dead_letters = Counter("liaison_router_dead_letters_total", "Records dead-lettered.",
                                    ["error"], registry=registry)
        self.commits = Counter("liaison_router_transactions_total", "Transactions by result.",
                               ["result"], registry=registry)
        self.txn_seconds = Histogram("liaison_router_transaction_seconds", "Transaction duration.",
                                     registry=registry,
                                     buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5))
        self.latency = Histogram("liaison_router_latency_seconds",
                                 "Record timestamp to committed delivery.", registry=registry,
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.records = Counter("liaison_router_records_total", "Input records consumed.",
                               registry=registry)
        self.partitions = Gauge("liaison_router_assigned_partitions", "Outbox partitions owned.",
                                registry=registry)
