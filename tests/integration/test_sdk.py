"""The agency SDK against a real bus: send, inbox, receipts, ask, and its errors."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from liaison.core.settings import KafkaSettings
from liaison.errors import BrokerUnavailable
from liaison.sdk import (
    AgencyClient,
    AgencyNotOnboarded,
    MessageError,
    NotStarted,
    ReplyTimeout,
    envelope,
    query,
    reply,
)
from tests.bus_harness import Bus
from tests.integration.test_cli_common import module_bus

pytestmark = pytest.mark.asyncio(loop_scope="module")
bus = module_bus()  # one bus for the module: each test uses its own agencies, cases and groups


async def _first(sub: Any, wanted: Callable[[Any], bool], timeout_s: float = 20.0) -> Any:
    """The first item of a subscription that is `wanted` (other tests share the bus)."""
    async def scan() -> Any:
        async for item in sub:
            if wanted(item):
                return item
        raise AssertionError("the subscription ended")
    return await asyncio.wait_for(scan(), timeout_s)


async def test_send_reaches_the_inbox_and_the_sender_gets_receipts(bus: Bus) -> None:
    """A query sent with the SDK is delivered to the addressee's inbox and receipted to the sender."""
    async with AgencyClient(bus.settings, "FR-PN") as fr, AgencyClient(bus.settings, "DE-BKA") as de:
        q = query(envelope("FR-PN", to=["DE-BKA"], case_id="CASE-SDK-1"), "Known to you?")
        await fr.send("Query", q)

        mid = q["envelope"]["message_id"]
        async with de.inbox(types=["query"], group="worker") as inbox:
            message_type, got = await _first(inbox, lambda item: item[1]["envelope"]["message_id"] == mid)
        assert message_type == "Query"
        assert got["question"] == "Known to you?"

        async with fr.receipts() as receipts:
            receipt = await _first(receipts, lambda r: r["envelope"]["correlation_id"] == mid)
        assert receipt["kind"] == "DELIVERED"
        assert receipt["recipient"] == "DE-BKA"
        assert receipt["envelope"]["correlation_id"] == q["envelope"]["message_id"]


async def _handle_one_and_fail(client: AgencyClient) -> None:
    async with client.inbox(group="alo") as inbox:
        async for _, record in inbox:
            raise RuntimeError(f"handler failed on {record['envelope']['message_id']}")


async def test_inbox_commits_only_what_the_handler_finished(bus: Bus) -> None:
    """At least once: a message whose handler raised is read again; a handled one is not."""
    async with AgencyClient(bus.settings, "NL-KLPD") as nl, AgencyClient(bus.settings, "IT-PS") as it:
        sent = [query(envelope("NL-KLPD", to=["IT-PS"], case_id=f"CASE-ALO-{i}"), f"Q{i}") for i in range(2)]
        for q in sent:
            await nl.send("Query", q)
        ids = [q["envelope"]["message_id"] for q in sent]
        assert len(await bus.read(bus.topics.inbox("Query", "IT-PS"), 2)) == 2  # both routed

        with pytest.raises(RuntimeError, match=f"handler failed on {ids[0]}"):
            await _handle_one_and_fail(it)

        seen = []
        async with it.inbox(group="alo", until_end=True) as inbox:
            async for _, record in inbox:
                seen.append(record["envelope"]["message_id"])
        assert seen == ids  # the failed one again, then the next

        async with it.inbox(group="alo", until_end=True) as inbox:
            assert [r async for r in inbox] == []  # everything handled was committed


async def test_ask_returns_the_reply_to_its_query(bus: Bus) -> None:
    """ask() sends a query and returns the reply that names it, while the answerer uses inbox()."""
    async with AgencyClient(bus.settings, "ES-CNP") as es, AgencyClient(bus.settings, "PL-KGP") as pl:

        async def answer_one() -> None:
            async with pl.inbox(types=["Query"], group="answerer") as inbox:
                async for _, q in inbox:
                    env = q["envelope"]
                    await pl.send("Reply", reply(envelope("PL-KGP", correlation_id=env["message_id"],
                                                          case_id=env["case_id"]), "NO_HIT",
                                                 information="Not known."))
                    return

        answerer = asyncio.create_task(answer_one())
        q = query(envelope("ES-CNP", to=["PL-KGP"], case_id="CASE-ASK"), "Known to you?")
        got = await es.ask(q, timeout_s=30)
        await asyncio.wait_for(answerer, 10)
        assert got["outcome"] == "NO_HIT"
        assert got["envelope"]["correlation_id"] == q["envelope"]["message_id"]


async def test_ask_times_out_with_what_the_bus_said(bus: Bus) -> None:
    """A query denied to its only addressee never gets a reply: ReplyTimeout names the denial."""
    async with AgencyClient(bus.settings, "FR-PN") as fr:
        q = query(envelope("FR-PN", to=["DE-BKA"], restricted=["DE"], case_id="CASE-TO"), "Anyone?")
        started = time.monotonic()
        with pytest.raises(ReplyTimeout, match="DE-BKA DENIED") as caught:
            await fr.ask(q, timeout_s=3)
        assert time.monotonic() - started < 10
        assert caught.value.query_id == q["envelope"]["message_id"]


async def test_lifecycle_and_typed_errors(bus: Bus) -> None:
    """start/stop are safe twice; misuse and missing topics raise errors that say what to fix."""
    client = AgencyClient(bus.settings, "FR-PN", codec=bus.codec)
    with pytest.raises(NotStarted, match="start"):
        await client.send("Query", query(envelope("FR-PN", to=["DE-BKA"]), "?"))
    await client.start()
    await client.start()
    with pytest.raises(MessageError, match="SPOOFED_ORIGINATOR"):
        await client.send("Query", query(envelope("DE-BKA", to=["FR-PN"]), "?"))
    with pytest.raises(MessageError, match="Alert, Query, Reply"):
        await client.send("Receipt", {"envelope": {}})
    await client.stop()
    await client.stop()

    with pytest.raises(AgencyNotOnboarded, match="liaison agency add SE-NOA"):
        async with AgencyClient(bus.settings, "SE-NOA", codec=bus.codec):
            pass


async def test_a_broker_that_is_down_is_reported_quickly() -> None:
    """No broker at the address: BrokerUnavailable names the setting to check, within seconds."""
    settings = KafkaSettings(bootstrap_servers="127.0.0.1:1", registry_url="http://127.0.0.1:1")
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="LIAISON_BOOTSTRAP_SERVERS"):
        async with AgencyClient(settings, "FR-PN"):
            pass
    assert time.monotonic() - started < 5
