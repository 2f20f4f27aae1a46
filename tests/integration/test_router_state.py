"""The router's state on disk: restored from its checkpoint, and forgotten when it expires."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaProducer

from liaison.sdk import alert, envelope, query, reply
from tests.bus_harness import running_bus
from tests.kafka_helpers import eventually, read_until


async def test_a_restart_reads_only_what_came_after_its_checkpoint(kafka_bootstrap: str,
                                                                    tmp_path: Path) -> None:
    """Stopped and started again on the same state folder, the router does not read bus.routed from
    the beginning, and still knows every message routed before: a reply to an old query is routed."""
    async with running_bus(kafka_bootstrap, router=False) as bus:
        first = await bus.start_router(state_dir=tmp_path)
        asked = query(envelope("NL-KLPD", to=["DE-BKA"], case_id="CKPT"), "Known?")
        await bus.send("Query", asked)
        for i in range(200):
            await bus.send("Alert", alert(envelope("FR-PN", to=["DE-BKA"], case_id=f"CKPT-{i}")))
        await bus.read(bus.topics.inbox("Alert", "DE-BKA"), 200)
        assert first.state.routed.restored_from == {}  # a new folder: read from the start
        assert await first.state.routed.wait_caught_up(timeout_s=30)  # its checkpoint is at the end
        await bus.stop_routers()

        again = await bus.start_router(state_dir=tmp_path)
        assert again.state.routed.restored_from, "no checkpoint was found"
        assert again.state.routed.records_read < 10, "bus.routed was read again from the start"
        assert asked["envelope"]["message_id"] in again.state.routed.items
        await bus.send("Reply", reply(envelope("DE-BKA", correlation_id=asked["envelope"]["message_id"],
                                               case_id="CKPT"), "NO_HIT"))
        assert len(await bus.read(bus.topics.inbox("Reply", "NL-KLPD"), 1)) == 1


async def test_expired_entries_are_deleted_and_no_longer_known(kafka_bootstrap: str,
                                                                tmp_path: Path) -> None:
    """An entry past its expiry gets a tombstone in bus.routed; a reply citing it is then a reply to
    an unknown message. An entry not yet expired stays."""
    async with running_bus(kafka_bootstrap, router=False) as bus:
        old, fresh = str(uuid.uuid4()), str(uuid.uuid4())
        now = int(time.time() * 1000)
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            for message_id, expires in ((old, now - 1000), (fresh, now + 3_600_000)):
                value = {"t": "Query", "o": "NL-KLPD", "h": [], "d": ["DE-BKA"], "k": "CHECK", "f": None,
                         "s": None, "r": [], "l": "AMBER", "x": expires, "p": None}
                await producer.send_and_wait(bus.topics.routed, json.dumps(value).encode(),
                                             key=message_id.encode())
        finally:
            await producer.stop()
        router = await bus.start_router(state_dir=tmp_path, state_sweep_interval_s=0.5)
        await eventually(lambda: _known(router, old), lambda known: not known, timeout_s=30)
        assert fresh in router.state.routed.items
        tombstones = [r for r in await read_until(kafka_bootstrap, bus.topics.routed, count=3, timeout_s=10)
                      if r.key == old.encode() and r.value is None]
        assert len(tombstones) == 1

        await bus.send("Reply", reply(envelope("DE-BKA", correlation_id=old, case_id="OLD"), "NO_HIT"))
        receipts = [r for _, r in await bus.read(bus.topics.receipts("DE-BKA"), 1, timeout_s=30)]
        assert [(r["kind"], r["reason_code"]) for r in receipts] == [("REJECTED", "UNKNOWN_CORRELATION")]


async def _known(router: object, message_id: str) -> bool:
    return message_id in router.state.routed.items  # type: ignore[attr-defined]
