"""Every socket the bus's services and clients open to the broker is closed when they stop.

The warning filter lets a socket the garbage collector finds open at a random later point pass
with a warning (see pyproject.toml); this test is the deterministic check that none of them is
ours: it counts the open sockets to the broker before and after each component's life.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable

import pytest
from aiokafka import AIOKafkaProducer

from liaison.audit_view import query_states
from liaison.sdk import AgencyClient, envelope, query
from liaison.table import CompactedTable
from tests.bus_harness import running_bus
from tests.deadlines_harness import ManualClock, deadlines, until
from tests.kafka_helpers import read_until

pytestmark = pytest.mark.integration


def _open_to(bootstrap: str) -> set[int]:
    """The ids of this process's asyncio transports that still hold a socket to the broker."""
    port = int(bootstrap.split(",", maxsplit=1)[0].rsplit(":", 1)[1])
    gc.collect()
    found = set()
    for obj in gc.get_objects():
        if isinstance(obj, asyncio.Transport) and not obj.is_closing():
            peer = obj.get_extra_info("peername")
            if peer is not None and peer[1] == port:
                found.add(id(obj))
    return found


async def _closes_what_it_opens(bootstrap: str, life: Callable[[], Awaitable[object]]) -> None:
    before = _open_to(bootstrap)
    await life()
    # a transport closes on the next turn of the loop, or once its last bytes are flushed
    await until(lambda: not _open_to(bootstrap) - before, 10,
                lambda: f"{len(_open_to(bootstrap) - before)} socket(s) to the broker left open")


async def test_the_router_deadlines_service_tables_sdk_and_readers_close_their_sockets(
        kafka_bootstrap: str) -> None:
    async with running_bus(kafka_bootstrap, router=False) as bus:
        servers = bus.settings.bootstrap_servers

        async def router() -> None:
            await bus.start_router()
            await bus.stop_routers()

        async def table() -> None:
            async with CompactedTable(bus.settings, bus.topics.directory) as directory:
                assert directory.items

        async def deadline_service() -> None:
            async with deadlines(bus, ManualClock(time.time())):
                pass

        async def sdk() -> None:
            async with AgencyClient(bus.settings, "FR-PN") as fr:
                await fr.send("Query", query(envelope("FR-PN", to=["DE-BKA"], case_id="LEAK-1"), "Known?"))
                async with fr.receipts():
                    pass

        async def readers() -> None:
            await read_until(servers, bus.topics.directory, count=1, timeout_s=10)
            await query_states(bus.settings, ["no-such-query"])

        async def producer() -> None:
            p = AIOKafkaProducer(bootstrap_servers=servers)
            await p.start()
            await p.send_and_wait(bus.topics.outbox("Alert", "FR-PN"), b"not avro")
            await p.stop()

        for life in (router, table, deadline_service, sdk, readers, producer):
            await _closes_what_it_opens(servers, life)

        # the check itself: a producer not stopped yet is seen
        before = _open_to(servers)
        left = AIOKafkaProducer(bootstrap_servers=servers)
        await left.start()
        try:
            await left.send_and_wait(bus.topics.outbox("Alert", "FR-PN"), b"not avro either")
            assert _open_to(servers) - before
        finally:
            await left.stop()
