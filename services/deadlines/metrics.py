"""The deadline service's Prometheus metrics, on an injected registry (labels with few values only)."""

from __future__ import annotations

from collections import Counter as Tally

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.deadlines.lifecycle import PRIORITIES, QueryState

# From a minute to a month: the legal deadlines are 8 hours, 3 days and 7 days.
REPLY_BUCKETS = (60, 600, 1800, 3600, 4 * 3600, 8 * 3600, 86_400, 3 * 86_400, 7 * 86_400,
                 14 * 86_400, 30 * 86_400)


def priority_label(priority: str) -> str:
    return priority if priority in PRIORITIES else "OTHER"


class DeadlinesMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.open_queries = Gauge("liaison_deadlines_open_queries", "Queries in state OPEN.",
                                  ["priority"], registry=registry)
        self.overdue_queries = Gauge("liaison_deadlines_overdue_queries",
                                     "OPEN queries with at least one overdue notice sent.",
                                     registry=registry)
        self.reminders = Counter("liaison_deadlines_reminders_total",
                                 "Reminders sent (one per requested agency).", registry=registry)
        self.overdue = Counter("liaison_deadlines_overdue_total",
                               "Overdue events (one per late agency; each tells both sides).",
                               registry=registry)
        self.closed = Counter("liaison_deadlines_closed_total",
                              "Closing notices sent to requesters.", registry=registry)
        self.time_to_reply = Histogram("liaison_deadlines_time_to_reply_seconds",
                                       "Query creation to each requested agency's final answer.",
                                       ["priority"], buckets=REPLY_BUCKETS, registry=registry)
        self.transactions = Counter("liaison_deadlines_transactions_total", "Transactions by result.",
                                    ["result"], registry=registry)
        self.undeliverable = Counter("liaison_deadlines_undeliverable_total",
                                     "Notices dropped because the agency has no receipts topic.",
                                     registry=registry)
        self.malformed = Counter("liaison_deadlines_malformed_records_total",
                                 "bus.queries records skipped because a field is missing or wrong.",
                                 registry=registry)
        for priority in (*PRIORITIES, "OTHER"):
            self.open_queries.labels(priority).set(0)
        for result in ("committed", "aborted", "fenced"):
            self.transactions.labels(result)


class OpenQueries:
    """Counts behind the two gauges, kept up to date record by record (no scan per change)."""

    def __init__(self, metrics: DeadlinesMetrics) -> None:
        self._metrics = metrics
        self._open: dict[str, tuple[str, bool]] = {}  # query id -> (priority label, overdue)
        self._by_priority: Tally[str] = Tally()
        self._overdue = 0

    def update(self, query_id: str, query: QueryState | None) -> None:
        """Replace the query's contribution; None (deleted or unreadable) removes it."""
        old = self._open.pop(query_id, None)
        if old is not None:
            self._by_priority[old[0]] -= 1
            self._overdue -= old[1]
        if query is not None and query.is_open:
            new = (priority_label(query.priority), bool(query.overdue))
            self._open[query_id] = new
            self._by_priority[new[0]] += 1
            self._overdue += new[1]

    def publish(self) -> None:
        for priority in (*PRIORITIES, "OTHER"):
            self._metrics.open_queries.labels(priority).set(self._by_priority[priority])
        self._metrics.overdue_queries.set(self._overdue)
