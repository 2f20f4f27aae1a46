"""The router's Prometheus metrics, on an injected registry (labels with few values only).

Label values that are known in advance (message types, outcomes, reason and error codes, topic
families) are created at zero, so that `increase()` and `rate()` in alerting rules see the first
event of a series instead of only the ones after it.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from liaison.policy.reasons import REASONS, REJECTIONS
from liaison.schemas import MESSAGE_TYPES
from liaison.topics import FAMILIES
from services.router.limits import CODES as LIMIT_CODES

OUTCOMES = ("DELIVER", "DENY", "HOLD")
TRANSACTION_RESULTS = ("committed", "aborted", "fenced")
DECODE_ERRORS = ("BAD_MAGIC_BYTE", "TRUNCATED", "SCHEMA_MISMATCH", "UNKNOWN_SCHEMA_ID",
                 "WRONG_TOPIC_TYPE", "UNDECODABLE")
DENIAL_REASONS = tuple(sorted(set(REASONS) - REJECTIONS - {"FOR_REVIEW"}))
"""Reason codes of DENY and HOLD decisions; whole-message rejections are counted as dead letters."""
DEAD_LETTER_ERRORS = (*DECODE_ERRORS, *sorted(REJECTIONS), *sorted(LIMIT_CODES))


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
        self.catch_ups = Counter("liaison_router_state_catch_ups_total",
                                 "Reads of the shared state on a message citing one not seen yet.",
                                 registry=registry)
        self.parked_total = Counter("liaison_router_parked_total",
                                    "Records parked to wait for a message they cite, not seen here yet.",
                                    registry=registry)
        self.parked = Gauge("liaison_router_parked_records",
                            "Records waiting for a message they cite (the others are routed meanwhile).",
                            registry=registry)
        self.lag = Gauge("liaison_router_consumer_lag",
                         "Records in this instance's outbox partitions not routed yet, by topic family "
                         "(alerts, queries, replies).", ["family"], registry=registry)
        self.restarts = Counter("liaison_router_client_restarts_total",
                                "Kafka clients started over: after a fatal error, or a stall (records "
                                "waiting, nothing committed for LIAISON_STALL_RESTART_S).", ["cause"],
                                registry=registry)
        for cause in ("fatal", "stalled"):
            self.restarts.labels(cause)
        for message_type in MESSAGE_TYPES:
            for outcome in OUTCOMES:
                self.routed.labels(message_type, outcome)
        for reason in DENIAL_REASONS:
            self.denials.labels(reason)
        for error in DEAD_LETTER_ERRORS:
            self.dead_letters.labels(error)
        for result in TRANSACTION_RESULTS:
            self.commits.labels(result)
        for family in FAMILIES.values():
            self.lag.labels(family).set(0)

