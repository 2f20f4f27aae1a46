"""With two router instances, a case group past its end date is ended once: one audit record, one
notice per member (the instance that owns the first outbox partition ends groups)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from liaison.policy import reasons as R
from liaison.sdk import builders as b
from tests.bus_harness import running_bus
from tests.integration.test_query_answers_at_once import _start_two_routers, _stop
from tests.kafka_helpers import eventually

pytestmark = pytest.mark.integration

MEMBERS = ("FR-PN", "DE-BKA")


async def test_two_routers_end_a_group_once_and_tell_each_member_once(kafka_bootstrap: str,
                                                                        tmp_path: Path) -> None:
    async with running_bus(kafka_bootstrap, router=False, partitions=2) as bus:
        routers, _ = await _start_two_routers(bus, tmp_path, [], LIAISON_CASE_GROUP_CHECK_S="1")
        try:
            ends = int(time.time() * 1000) + 12_000
            propose = b.query(b.envelope("FR-PN", to=["DE-BKA"], case_id="END-ONCE"), "A short team?",
                              case_group=b.case_group_change("JIT-END-ONCE", "PROPOSE", ends_at=ends))
            await bus.send("Query", propose)
            qid = propose["envelope"]["message_id"]
            await bus.read(bus.topics.inbox("Query", "DE-BKA"), 1)
            accept = b.invitation_answer(b.envelope("DE-BKA", correlation_id=qid), accept=True)
            await bus.send("Reply", accept)

            def with_code(code: str, records: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
                return [r for _, r in records if r.get("reason_code") == code]

            def ends_in(records: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
                return with_code(R.CASE_GROUP_ENDED, records)

            everything = 10_000  # more than there is: each look reads the whole topic for 2 s
            await eventually(lambda: bus.read(bus.topics.audit, everything, timeout_s=2),
                             lambda found: bool(with_code(R.CASE_GROUP_JOINED, found)), timeout_s=30)
            # Both instances frozen across the end date (shorter than their session timeout), then
            # thawed together: both find the group due at the same moment, before either can read
            # what the other wrote. Only the owner of the first outbox partition may end it.
            assert time.time() * 1000 < ends - 1_000, "the group was formed too slowly for this test"
            await asyncio.sleep((ends - 1_000) / 1000 - time.time())
            for router in routers:
                router.pause()
            try:
                await asyncio.sleep((ends + 1_500) / 1000 - time.time())
            finally:
                for router in routers:
                    router.resume()
            await eventually(lambda: bus.read(bus.topics.audit, everything, timeout_s=2),
                             lambda found: bool(ends_in(found)), timeout_s=60, interval_s=0.5)
            # both routers look every second: a second end would be committed within the settle time
            audit = await bus.read(bus.topics.audit, 1, settle_s=3.0)
            assert len(ends_in(audit)) == 1, ends_in(audit)
            for code in MEMBERS:
                told = [r for r in ends_in(await bus.read(bus.topics.receipts(code), 1, settle_s=1.0))
                        if r["kind"] == "GROUP_CHANGED"]
                assert len(told) == 1, (code, told)
                assert told[0]["envelope"]["created_at"] >= ends
        finally:
            _stop(routers)
