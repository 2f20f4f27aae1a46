"""`liaison top`: a live view of the bus, read from the services' Prometheus `/metrics` endpoints.

Counters become rates by comparing two scrapes; a service that does not answer is shown as down,
with the reason, while the others are still shown.
"""

from __future__ import annotations

import math
import time
import urllib.error
import urllib.request
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Annotated

import typer
from prometheus_client.parser import text_string_to_metric_families
from rich import box
from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from liaison.cli.output import Out

# The metrics ports of `make up` (liaison.local.stack.SERVICES).
DEFAULT_URLS = {
    "registry": "http://127.0.0.1:9181/metrics",
    "router": "http://127.0.0.1:9182/metrics",
    "deadlines": "http://127.0.0.1:9183/metrics",
    "delegations": "http://127.0.0.1:9184/metrics",
}
SCRAPE_TIMEOUT_S = 2.0

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Scrape:
    """One service's samples at one moment, or why it could not be read."""

    service: str
    url: str
    at: float
    samples: dict[str, dict[Labels, float]] = field(default_factory=dict)
    error: str | None = None

    def total(self, name: str, **match: str) -> float | None:
        """Sum of the samples of `name` whose labels include `match`; None when there are none."""
        values = [v for labels, v in self.samples.get(name, {}).items()
                  if all(dict(labels).get(k) == want for k, want in match.items())]
        return sum(values) if values else None

    def by(self, name: str, *keys: str) -> dict[tuple[str, ...], float]:
        """Samples of `name` summed by the given labels."""
        out: dict[tuple[str, ...], float] = defaultdict(float)
        for labels, value in self.samples.get(name, {}).items():
            as_dict = dict(labels)
            out[tuple(as_dict.get(k, "") for k in keys)] += value
        return dict(out)


def metrics_url(value: str) -> str:
    """Typer callback: `host:port`, `http://host:port` or a full URL; `/metrics` is the default path."""
    url = value if "://" in value else f"http://{value}"
    if not url.startswith(("http://", "https://")):
        raise typer.BadParameter(f"{value} is not an http(s) URL")
    scheme, rest = url.split("://", 1)
    return url if "/" in rest else f"{scheme}://{rest}/metrics"


def scrape(service: str, url: str, *, timeout_s: float = SCRAPE_TIMEOUT_S) -> Scrape:
    at = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310  # http(s) checked by metrics_url
            text = resp.read().decode()
        samples: dict[str, dict[Labels, float]] = defaultdict(dict)
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples[s.name][tuple(sorted(s.labels.items()))] = s.value
    except urllib.error.HTTPError as exc:
        exc.close()
        return Scrape(service, url, at, error=f"HTTP {exc.code}")
    except urllib.error.URLError as exc:
        reason = exc.reason
        detail = reason.strerror if isinstance(reason, OSError) and reason.strerror else str(reason)
        return Scrape(service, url, at, error=detail.lower())
    except TimeoutError:
        return Scrape(service, url, at, error=f"no answer within {timeout_s:g} s")
    except (OSError, ValueError) as exc:  # a reset connection, or a page that is not metrics
        return Scrape(service, url, at, error=str(exc) or type(exc).__name__)
    return Scrape(service, url, at, dict(samples))


def scrape_all(urls: dict[str, str]) -> dict[str, Scrape]:
    with ThreadPoolExecutor(max_workers=len(urls)) as pool:
        futures = {name: pool.submit(scrape, name, url) for name, url in urls.items()}
        return {name: future.result() for name, future in futures.items()}


# -- rendering ---------------------------------------------------------------------------------------
def _num(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.0f}" if value == int(value) else f"{value:.2f}"


def _rate(now: float | None, before: float | None, seconds: float | None) -> str:
    if now is None or seconds is None or seconds <= 0:
        return "-"
    delta = now - (before or 0.0)
    return "-" if delta < 0 else f"{delta / seconds:.2f}"  # negative: the service restarted


def _duration(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds):
        return "-"
    for unit, size in (("d", 86_400), ("h", 3600), ("min", 60), ("s", 1)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds * 1000:.0f} ms"


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus's histogram_quantile over cumulative bucket counts {upper bound: count}."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * ((rank - below) / (count - below) if count > below else 1)
        lower, below = bound, count
    return lower


def _buckets(s: Scrape, name: str, **match: str) -> dict[float, float]:
    """Cumulative bucket counts {upper bound: count} of a histogram, summed over other labels."""
    out: dict[float, float] = defaultdict(float)
    for labels, value in s.samples.get(name, {}).items():
        as_dict = dict(labels)
        if "le" in as_dict and all(as_dict.get(k) == want for k, want in match.items()):
            out[float(as_dict["le"])] += value
    return dict(out)


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                  min_width=len(title))
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    return table


def _side_by_side(*items: RenderableType) -> Table:
    grid = Table.grid(padding=(0, 4))
    for _ in items:
        grid.add_column()
    grid.add_row(*items)
    return grid


def _down(s: Scrape) -> Text:
    return Text(f"{s.service}: down ({s.error}) at {s.url}", style="bold red")


def _counter_table(title: str, name: str, label: str, cur: Scrape, *, prev: Scrape | None,
                   seconds: float | None) -> Table:
    table = _table(title, label, "total", "per s")
    before = prev.by(name, label) if prev else {}
    rows = sorted(cur.by(name, label).items(), key=lambda kv: (-kv[1], kv[0]))
    for key, value in rows:
        if value > 0:
            table.add_row(key[0], _num(value), _rate(value, before.get(key), seconds))
    if not table.row_count:
        table.add_row("none", "0", "-")
    return table


def _router(cur: Scrape, prev: Scrape | None, seconds: float | None) -> RenderableType:
    routed = _table("router: routing decisions", "type / outcome", "total", "per s")
    before = prev.by("liaison_router_messages_total", "type", "outcome") if prev else {}
    for (mtype, outcome), value in sorted(cur.by("liaison_router_messages_total", "type", "outcome").items()):
        if value > 0:
            routed.add_row(f"{mtype} {outcome}", _num(value),
                           _rate(value, before.get((mtype, outcome)), seconds))
    if not routed.row_count:
        routed.add_row("no traffic yet", "0", "-")
    records = cur.total("liaison_router_records_total")
    routed.add_row("input records", _num(records),
                   _rate(records, prev.total("liaison_router_records_total") if prev else None, seconds))

    latency = _buckets(cur, "liaison_router_latency_seconds_bucket")
    window = "since start"
    if prev is not None:
        earlier = _buckets(prev, "liaison_router_latency_seconds_bucket")
        recent = {le: v - earlier.get(le, 0.0) for le, v in latency.items()}
        if recent and max(recent.values()) > 0 and min(recent.values()) >= 0:
            latency, window = recent, "last interval"
    health = _table("router: health", "measure", "value")
    health.add_row(f"latency p50 ({window})", _duration(quantile(0.5, latency)))
    health.add_row(f"latency p99 ({window})", _duration(quantile(0.99, latency)))
    for result in ("committed", "aborted", "fenced"):
        health.add_row(f"transactions {result}",
                       _num(cur.total("liaison_router_transactions_total", result=result)))
    health.add_row("assigned partitions", _num(cur.total("liaison_router_assigned_partitions")))
    for (family,), lag in sorted(cur.by("liaison_router_consumer_lag", "family").items()):
        health.add_row(f"lag {family}", _num(lag))
    denials = _counter_table("router: denials and holds", "liaison_router_denials_total", "reason",
                             cur, prev=prev, seconds=seconds)
    dead = _counter_table("router: dead letters", "liaison_router_dead_letters_total", "error", cur,
                          prev=prev, seconds=seconds)
    return Group(_side_by_side(routed, health), _side_by_side(denials, dead))


def _deadlines(cur: Scrape) -> Table:
    table = _table("deadlines: queries", "measure", "value")
    for (priority,), count in sorted(cur.by("liaison_deadlines_open_queries", "priority").items()):
        table.add_row(f"open {priority}", _num(count))
    table.add_row("overdue now", _num(cur.total("liaison_deadlines_overdue_queries")))
    table.add_row("reminders sent", _num(cur.total("liaison_deadlines_reminders_total")))
    table.add_row("overdue notices sent", _num(cur.total("liaison_deadlines_overdue_total")))
    for (priority,), _ in sorted(cur.by("liaison_deadlines_time_to_reply_seconds_count", "priority").items()):
        buckets = _buckets(cur, "liaison_deadlines_time_to_reply_seconds_bucket", priority=priority)
        median = quantile(0.5, buckets)
        if median is not None:
            table.add_row(f"median time to reply {priority}", _duration(median))
    return table


def _delegations(cur: Scrape) -> Table:
    table = _table("delegations: liaison officers", "measure", "value")
    table.add_row("in force", _num(cur.total("liaison_delegations_officers_in_force")))
    for (why,), count in sorted(cur.by("liaison_delegations_ended_total", "why").items()):
        table.add_row(f"access ended ({why})", _num(count))
    table.add_row("failed attempts", _num(cur.total("liaison_delegations_failures_total")))
    return table


def _registry(cur: Scrape, prev: Scrape | None, seconds: float | None) -> Table:
    table = _table("registry", "measure", "value")
    requests = cur.total("liaison_registry_requests_total")
    before = prev.total("liaison_registry_requests_total") if prev else None
    table.add_row("requests per s", _rate(requests or 0.0, before, seconds))
    table.add_row("schemas", _num(cur.total("liaison_registry_schemas")))
    return table


def render(cur: dict[str, Scrape], prev: dict[str, Scrape] | None = None) -> RenderableType:
    """One frame: service states, then each service's numbers (rates need a previous scrape)."""
    services = _table("services", "service", "state", "metrics")
    for column in services.columns:
        column.justify = "left"
    for s in cur.values():
        services.add_row(s.service, Text("up", style="green") if s.error is None else
                         Text(f"down: {s.error}", style="bold red"), s.url)
    parts: list[RenderableType] = [services]
    others: list[RenderableType] = []
    for name, s in cur.items():
        before = prev.get(name) if prev else None
        if before is not None and before.error is not None:
            before = None
        seconds = s.at - before.at if before is not None else None
        if s.error is not None:
            parts.append(_down(s))
        elif name == "router":
            parts.append(_router(s, before, seconds))
        elif name == "deadlines":
            others.append(_deadlines(s))
        elif name == "registry":
            others.append(_registry(s, before, seconds))
        elif name == "delegations":
            others.append(_delegations(s))
    if others:
        parts.append(_side_by_side(*others))
    return Group(*parts)


def top(*,
    router: Annotated[str, typer.Option(help="Router metrics URL (or host:port).",
                                        callback=metrics_url)] = DEFAULT_URLS["router"],
    registry: Annotated[str, typer.Option(help="Registry metrics URL (or host:port).",
                                          callback=metrics_url)] = DEFAULT_URLS["registry"],
    deadlines: Annotated[str, typer.Option(help="Deadline service metrics URL (or host:port).",
                                           callback=metrics_url)] = DEFAULT_URLS["deadlines"],
    delegations: Annotated[str, typer.Option(help="Delegations service metrics URL (or host:port).",
                                             callback=metrics_url)] = DEFAULT_URLS["delegations"],
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between two scrapes.")] = 2.0,
    once: Annotated[bool, typer.Option("--once", help="Print one frame (two scrapes `interval` "
                                                      "apart, for the rates) and exit.")] = False,
) -> None:
    """Watch the bus live: routed/s by outcome, denials, dead letters, lag, open and overdue queries.

    Example: liaison top --router http://10.0.0.5:9182
    """
    urls = {"router": router, "registry": registry, "deadlines": deadlines, "delegations": delegations}
    console = Out().console
    prev = scrape_all(urls)
    if once:
        time.sleep(interval)
        console.print(render(scrape_all(urls), prev))
        return
    try:
        with Live(render(prev), console=console, refresh_per_second=4, screen=False) as live:
            while True:
                time.sleep(interval)
                cur = scrape_all(urls)
                live.update(render(cur, prev))
                prev = cur
    except KeyboardInterrupt:
        return
