"""The router's metrics on a real broker, scraped over HTTP as Prometheus does, and `liaison top`."""

from __future__ import annotations

import asyncio
import time
import urllib.request
import uuid
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from liaison.cli.main import app
from liaison.cli.top import DEFAULT_URLS
from liaison.core.metrics import MetricsServer
from liaison.local.broker import free_port
from liaison.local.stack import SERVICES
from liaison.sdk import alert, envelope, reply
from services.router.app import Router
from tests.bus_harness import running_bus
from tests.kafka_helpers import eventually

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310  # our own loopback endpoint
        return str(resp.read().decode())


async def scrape(url: str) -> Samples:
    """Every sample of the endpoint, keyed by name and label set."""
    text = await asyncio.to_thread(_fetch, url)
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def wait_for(url: str, check: Callable[[Samples], bool], *, timeout_s: float = 30.0) -> Samples:
    """Scrape until `check` holds; the last scrape is returned either way, for the assertion."""
    deadline = time.monotonic() + timeout_s
    samples = await scrape(url)
    while not check(samples) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        samples = await scrape(url)
    return samples


async def test_routing_outcomes_move_the_scraped_counters(kafka_bootstrap: str) -> None:
    """A delivery, a denial and a dead letter each show on /metrics; the lag gauge is there from the start."""
    async with running_bus(kafka_bootstrap) as bus:
        router = bus.routers[0][0]
        async with MetricsServer(router.registry) as server:
            before = await scrape(server.url)
            assert value(before, "liaison_router_messages_total", type="Alert", outcome="DELIVER") == 0
            assert value(before, "liaison_router_denials_total", reason="RESTRICTED_BY_ORIGINATOR") == 0
            assert value(before, "liaison_router_dead_letters_total", error="BAD_MAGIC_BYTE") == 0
            for family in ("alerts", "queries", "replies"):
                assert value(before, "liaison_router_consumer_lag", family=family) == 0

            await bus.send("Alert", alert(envelope("FR-PN", to=["DE-BKA", "ES-CNP", "IT-PS"],
                                                   restricted=["IT"])))
            await bus.send_raw(bus.topics.outbox("Alert", "NL-KLPD"), b"not avro at all")

            def settled(s: Samples) -> bool:
                return (value(s, "liaison_router_messages_total", type="Alert", outcome="DELIVER") == 2
                        and value(s, "liaison_router_dead_letters_total", error="BAD_MAGIC_BYTE") == 1)

            after = await wait_for(server.url, settled)
            assert value(after, "liaison_router_messages_total", type="Alert", outcome="DELIVER") == 2
            assert value(after, "liaison_router_messages_total", type="Alert", outcome="DENY") == 1
            assert value(after, "liaison_router_denials_total", reason="RESTRICTED_BY_ORIGINATOR") == 1
            assert value(after, "liaison_router_dead_letters_total", error="BAD_MAGIC_BYTE") == 1
            assert value(after, "liaison_router_records_total") == 2
            assert (value(after, "liaison_router_transactions_total", result="committed") or 0) >= 1
            assert value(after, "liaison_router_latency_seconds_count") == 1  # the one routed message
            outboxes = 3 * len(bus.directory.agencies)  # alerts, queries, replies of each agency
            assert value(after, "liaison_router_assigned_partitions") == outboxes
            for family in ("alerts", "queries", "replies"):
                assert value(after, "liaison_router_consumer_lag", family=family) is not None


async def test_lag_counts_outbox_records_the_router_has_not_routed(kafka_bootstrap: str) -> None:
    """While replies wait (parked) for the messages they cite, lag counts them; routing brings it to zero."""
    async with running_bus(kafka_bootstrap, router=False) as bus:
        router = await bus.start_router(unknown_ref_wait_s=8.0)
        router.lag_interval_s = 0.2
        async with MetricsServer(router.registry) as server:
            await eventually(lambda: _owned(router), bool, timeout_s=60)
            for _ in range(3):  # each cites a message nobody routed: the router waits for it
                await bus.send("Reply", reply(envelope("DE-BKA", correlation_id=str(uuid.uuid4())), "NO_HIT"))

            def lag(s: Samples, family: str) -> float | None:
                return value(s, "liaison_router_consumer_lag", family=family)

            waiting = await wait_for(server.url, lambda s: lag(s, "replies") == 3)
            assert (lag(waiting, "alerts"), lag(waiting, "queries"), lag(waiting, "replies")) == (0, 0, 3)
            def dead(s: Samples) -> float | None:
                return value(s, "liaison_router_dead_letters_total", error="UNKNOWN_CORRELATION")

            drained = await wait_for(server.url, lambda s: lag(s, "replies") == 0 and dead(s) == 3,
                                     timeout_s=90)
            assert (lag(drained, "replies"), dead(drained)) == (0, 3)


async def _owned(router: Router) -> int:
    return router.owned_partitions


async def test_top_once_prints_the_numbers_and_shows_a_down_service(kafka_bootstrap: str) -> None:
    """`liaison top --once` against the router's endpoint shows its counters; the others are down."""
    async with running_bus(kafka_bootstrap) as bus:
        router = bus.routers[0][0]
        async with MetricsServer(router.registry) as server:
            await bus.send("Alert", alert(envelope("FR-PN", to=["DE-BKA", "PL-KGP"], restricted=["PL"])))
            await bus.send_raw(bus.topics.outbox("Alert", "NL-KLPD"), b"\x07garbage")
            await wait_for(server.url, lambda s: value(
                s, "liaison_router_dead_letters_total", error="BAD_MAGIC_BYTE") == 1 and value(
                s, "liaison_router_messages_total", type="Alert", outcome="DENY") == 1)

            nobody = f"http://127.0.0.1:{free_port()}/metrics"
            url = server.url
            result = await asyncio.to_thread(CliRunner().invoke, app, [
                "top", "--once", "--interval", "0.2", "--router", f"127.0.0.1:{server.port}",
                "--registry", nobody, "--deadlines", nobody])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # tables may stand side by side; compare word sequences
    for expected in (f"router up {url}", f"registry down: connection refused {nobody}",
                     "Alert DELIVER 1 ", "Alert DENY 1 ", "RESTRICTED_BY_ORIGINATOR 1 ",
                     "BAD_MAGIC_BYTE 1 ", "lag alerts 0 ",
                     f"deadlines: down (connection refused) at {nobody}"):
        assert expected in text, result.output
    assert "Traceback" not in result.output


def test_top_defaults_are_the_local_stacks_metrics_ports() -> None:
    """Without options, `liaison top` reads the ports `make up` gives the services."""
    assert {spec.name: f"http://127.0.0.1:{spec.metrics_port}/metrics" for spec in SERVICES} == DEFAULT_URLS
