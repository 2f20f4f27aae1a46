"""The audit index and the time window of `liaison case` / `liaison trace`, against the scan they
replace, on a real broker.

Audit records and dead letters are written directly, shaped as the router writes them and with the
timestamps a test needs; no router runs.
"""

from __future__ import annotations

import asyncio
import stat
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

from liaison.audit_index import FOLDER, find_case, find_message, index_folder
from liaison.audit_view import Reading, Window, audit_row, sort_rows
from liaison.kafka_admin import ensure_topics
from liaison.sdk import envelope, query
from liaison.sdk.client import partitions_of
from liaison.store import DiskStore, StateDir
from tests.audit_records import Record, audit_key, audit_record, dead_letter
from tests.bus_harness import Bus, running_bus
from tests.integration.test_cli_common import cli, module_bus
from tests.kafka_helpers import eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")
bus = module_bus(router=False, partitions=2)

NOW = int(time.time() * 1000)
HOUR, DAY = 3_600_000, 86_400_000


@pytest_asyncio.fixture(loop_scope="module")
async def own_bus(kafka_bootstrap: str) -> AsyncIterator[Bus]:
    """A bus of the test's own, whose topics it may cut or delete."""
    async with running_bus(kafka_bootstrap, router=False, partitions=2) as running:
        yield running


async def _produce(bus: Bus, topic: str, records: list[tuple[bytes | None, bytes, int]]) -> None:
    """(key, value, timestamp) records, with timestamps set by hand (a plain producer of its own)."""
    producer = AIOKafkaProducer(bootstrap_servers=bus.settings.bootstrap_servers, linger_ms=5)
    await producer.start()
    try:
        sent = [await producer.send(topic, value, key=key, timestamp_ms=at) for key, value, at in records]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def _audit(bus: Bus, records: list[Record]) -> None:
    await _produce(bus, bus.topics.audit, [(audit_key(r), bus.codec.encode("AuditRecord", r),
                                            r["decided_at"]) for r in records])


def _id() -> str:
    return str(uuid.uuid4())


async def _write_case(bus: Bus, case_id: str, at: int) -> dict[str, str]:
    """A case as the router records it, and a dead letter; the message ids by role.

    An alert delivered to one agency and refused to another; a query and its reply; an onward copy
    of the alert; a reply to the query outside the case (keyed by its own id); a message of the case
    refused whole (its audit record has no key); a query refused whole, kept as a dead letter.
    """
    ids = {role: _id() for role in ("alert", "query", "reply", "copy", "loose", "rejected", "dead")}
    records = [
        audit_record(ids["alert"], case_id=case_id, decided_at=at),
        audit_record(ids["alert"], case_id=case_id, decided_at=at, recipient="IT-PS", decision="DENIED",
                     reason_code="RESTRICTED_BY_ORIGINATOR", reason="Not for IT-PS."),
        audit_record(ids["query"], case_id=case_id, decided_at=at + 1, message_type="Query"),
        audit_record(ids["reply"], case_id=case_id, decided_at=at + 2, message_type="Reply",
                     originator="DE-BKA", recipient="FR-PN", correlation_id=ids["query"]),
        audit_record(ids["copy"], case_id=case_id, decided_at=at + 3, originator="DE-BKA",
                     recipient="NL-KLPD", decision="REDACTED", derived_from=ids["alert"]),
        audit_record(ids["loose"], case_id=None, decided_at=at + 4, message_type="Reply",
                     originator="IT-PS", recipient="FR-PN", correlation_id=ids["query"]),
        audit_record(ids["rejected"], case_id=case_id, decided_at=at + 5, recipient=None,
                     decision="REJECTED", reason_code="INVALID", reason="No subject."),
    ]
    await _audit(bus, records)
    refused = query(envelope("FR-PN", to=["DE-BKA"], case_id=case_id, message_id=ids["dead"]), "Known?")
    letter = dead_letter(bus.codec.encode("Query", refused), failed_at=at + 6,
                         outbox=bus.topics.outbox("Query", "IT-PS"))
    await _produce(bus, bus.topics.deadletter, [(None, bus.codec.encode("DeadLetter", letter), at + 6)])
    return ids


async def _offsets(bus: Bus, *topics: str) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    """(first, end) offsets of every partition of the topics."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bus.settings.bootstrap_servers)
    await consumer.start()
    try:
        parts = await partitions_of(consumer, topics)
        return await consumer.beginning_offsets(parts), await consumer.end_offsets(parts)
    finally:
        await consumer.stop()


async def _records_on(bus: Bus, *topics: str) -> int:
    """How many records the topics hold (no transactions write to them: one offset, one record)."""
    first, end = await _offsets(bus, *topics)
    return sum(end[tp] - first[tp] for tp in end)


async def test_the_index_finds_what_the_scan_finds(bus: Bus, tmp_path: Path) -> None:
    """Cases and traces from the index equal those of a scan of the topics, row for row; the index
    folder is private."""
    ids = await _write_case(bus, "CASE-SAME", NOW - DAY)
    await _write_case(bus, "CASE-OTHER", NOW - DAY)
    folder = index_folder(tmp_path, bus.settings)

    scanned, indexed = Reading(), Reading()
    by_scan = await find_case(bus.settings, "CASE-SAME", folder=None, reading=scanned)
    by_index = await find_case(bus.settings, "CASE-SAME", folder=folder, reading=indexed)
    assert (scanned.how, indexed.how) == ("scan", "index")
    assert by_index == by_scan
    assert {(r["message_id"], r["recipient"]) for r in by_index} == {
        (ids["alert"], "DE-BKA"), (ids["alert"], "IT-PS"), (ids["query"], "DE-BKA"),
        (ids["reply"], "FR-PN"), (ids["copy"], "NL-KLPD")}

    for role, message_id in ids.items():
        from_scan = await find_message(bus.settings, message_id, folder=None)
        from_index = await find_message(bus.settings, message_id, folder=folder)
        assert from_index.to_dict() == from_scan.to_dict(), role
        assert from_index.found, role
    query_trace = await find_message(bus.settings, ids["query"], folder=folder)
    assert {r["message_id"] for r in query_trace.related} == {ids["reply"], ids["loose"]}
    dead = await find_message(bus.settings, ids["dead"], folder=folder)
    assert [v["error_code"] for v in dead.dead_letters] == ["SPOOFED_ORIGINATOR"]
    assert dead.dead_letters[0]["original"]["question"] == "Known?"

    for private in (folder, folder.parent):
        assert stat.S_IMODE(private.stat().st_mode) == 0o700, private


async def test_a_second_question_reads_only_what_was_appended(bus: Bus, tmp_path: Path) -> None:
    """The first question reads both topics whole; the next reads nothing; after three new audit
    records it reads those three, and the new decision is in the answer."""
    await _write_case(bus, "CASE-AGAIN", NOW - HOUR)
    folder = index_folder(tmp_path, bus.settings)
    first = Reading()
    rows = await find_case(bus.settings, "CASE-AGAIN", folder=folder, reading=first)
    assert first.records_read == await _records_on(bus, bus.topics.audit, bus.topics.deadletter)

    again = Reading()
    assert await find_case(bus.settings, "CASE-AGAIN", folder=folder, reading=again) == rows
    assert (again.how, again.records_read) == ("index", 0)

    late = audit_record(_id(), case_id="CASE-AGAIN", decided_at=NOW, recipient="ES-CNP")
    await _audit(bus, [late, audit_record(_id(), case_id="CASE-ELSE", decided_at=NOW),
                       audit_record(_id(), case_id=None, decided_at=NOW)])
    after = Reading()
    assert await find_case(bus.settings, "CASE-AGAIN", folder=folder, reading=after) == \
        sort_rows([*rows, audit_row(late)])
    assert (after.how, after.records_read) == ("index", 3)
    traced = await find_message(bus.settings, late["message_id"], folder=folder)
    assert [d["recipient"] for d in traced.decisions] == ["ES-CNP"]


async def test_concurrent_questions_share_the_index_without_harm(bus: Bus, tmp_path: Path) -> None:
    """Two questions at once: one holds the index, the other waits for it or reads the topic; both
    answer alike and the index is whole afterwards. A held index is not waited on forever."""
    await _write_case(bus, "CASE-BOTH", NOW - HOUR)
    folder = index_folder(tmp_path, bus.settings)
    expected = await find_case(bus.settings, "CASE-BOTH", folder=None)
    readings = [Reading(), Reading()]
    answers = await asyncio.gather(*(find_case(bus.settings, "CASE-BOTH", folder=folder, reading=r)
                                     for r in readings))
    assert answers == [expected, expected]
    assert "index" in {r.how for r in readings}
    after = Reading()
    assert await find_case(bus.settings, "CASE-BOTH", folder=folder, reading=after) == expected
    assert (after.how, after.records_read) == ("index", 0)

    held = StateDir.claim(folder.parent, FOLDER, folder.name)
    try:
        busy = Reading()
        assert await find_case(bus.settings, "CASE-BOTH", folder=folder, reading=busy,
                               lock_wait_s=0.2) == expected
        assert busy.how == "scan"
    finally:
        held.release()


async def test_since_and_until_read_only_their_window(own_bus: Bus, tmp_path: Path) -> None:
    """Forty records forty days old, then three an hour old: `--since 2d` reads the three; `--until`
    keeps the old ones; an index built since answers the window alike, reading nothing."""
    bus = own_bus
    old = [audit_record(_id(), case_id="CASE-W" if i % 10 == 0 else f"CASE-W{i}",
                        decided_at=NOW - 40 * DAY + i) for i in range(40)]
    recent = [audit_record(_id(), case_id="CASE-W", decided_at=NOW - HOUR + i) for i in range(3)]
    await _audit(bus, old)
    await _audit(bus, recent)
    since = Window(NOW - 2 * DAY)

    reading = Reading()
    rows = await find_case(bus.settings, "CASE-W", folder=None, window=since, reading=reading)
    assert [r["message_id"] for r in rows] == [r["message_id"] for r in recent]
    assert (reading.how, reading.records_read) == ("window", 3)
    # with no index built yet, the window is read, not the whole topic
    folder = index_folder(tmp_path, bus.settings)
    unbuilt = Reading()
    assert await find_case(bus.settings, "CASE-W", folder=folder, window=since, reading=unbuilt) == rows
    assert (unbuilt.how, unbuilt.records_read) == ("window", 3)

    until = await find_case(bus.settings, "CASE-W", folder=None, window=Window(None, NOW - 2 * DAY))
    assert [r["message_id"] for r in until] == [r["message_id"] for r in old if r["case_id"] == "CASE-W"]

    await find_case(bus.settings, "CASE-W", folder=folder)  # builds the index
    indexed = Reading()
    assert await find_case(bus.settings, "CASE-W", folder=folder, window=since, reading=indexed) == rows
    assert (indexed.how, indexed.records_read) == ("index", 0)

    by_cli = await cli("case", "CASE-W", "--since", "2d", "--json", "--no-index", settings=bus.settings)
    assert by_cli.code == 0, by_cli.err
    assert [r["message_id"] for r in by_cli.json()] == [r["message_id"] for r in recent]
    traced = await cli("trace", old[0]["message_id"], "--since", "2d", settings=bus.settings)
    assert traced.code == 1
    assert "in that time" in traced.one_error_line()


async def test_the_index_drops_what_the_topic_no_longer_has(own_bus: Bus, tmp_path: Path) -> None:
    """Records deleted from the topic (as retention deletes them) leave the index at the next question."""
    bus = own_bus
    await _write_case(bus, "CASE-GONE", NOW - DAY)
    folder = index_folder(tmp_path, bus.settings)
    assert await find_case(bus.settings, "CASE-GONE", folder=folder)

    admin = AIOKafkaAdminClient(bootstrap_servers=bus.settings.bootstrap_servers)
    await admin.start()
    try:
        ends = (await _offsets(bus, bus.topics.audit))[1]
        await admin.delete_records({tp: RecordsToDelete(end) for tp, end in ends.items()})
    finally:
        await admin.close()
    await _write_case(bus, "CASE-KEPT", NOW - HOUR)

    assert await find_case(bus.settings, "CASE-GONE", folder=None) == []
    reading = Reading()
    assert await find_case(bus.settings, "CASE-GONE", folder=folder, reading=reading) == []
    assert reading.how == "index"
    kept = await find_case(bus.settings, "CASE-KEPT", folder=folder)
    assert kept
    assert kept == await find_case(bus.settings, "CASE-KEPT", folder=None)


async def test_the_index_is_built_again_for_another_cluster_or_a_new_topic(
        own_bus: Bus, tmp_path: Path) -> None:
    """An index that says it came from another cluster, or whose topic was deleted and created
    again (with more records than it held, so that its offsets alone look fine), is built again."""
    bus = own_bus
    await _write_case(bus, "CASE-FIRST", NOW - DAY)
    folder = index_folder(tmp_path, bus.settings)
    rows = await find_case(bus.settings, "CASE-FIRST", folder=folder)

    store = DiskStore(folder / bus.topics.audit)
    positions, source = store.positions(), store.source()
    assert source is not None
    store.reset({**source, "cluster": "another-cluster"})
    store.apply({}, positions)
    store.close()
    rebuilt = Reading()
    assert await find_case(bus.settings, "CASE-FIRST", folder=folder, reading=rebuilt) == rows
    assert rebuilt.records_read == await _records_on(bus, bus.topics.audit)  # again from the start

    admin = AIOKafkaAdminClient(bootstrap_servers=bus.settings.bootstrap_servers)
    await admin.start()
    try:
        await admin.delete_topics([bus.topics.audit])
    finally:
        await admin.close()
    spec = next(s for s in bus.topics.bus_topics(partitions=2) if s.name == bus.topics.audit)

    async def recreated() -> bool:
        try:
            return bool(await ensure_topics(bus.settings, [spec]))
        except Exception:  # noqa: BLE001  # still marked for deletion
            return False
    await eventually(recreated, bool, timeout_s=60, interval_s=0.5)
    later = [audit_record(_id(), case_id="CASE-NEW", decided_at=NOW - HOUR + i) for i in range(30)]
    await _audit(bus, later)

    fresh = Reading()
    assert await find_case(bus.settings, "CASE-FIRST", folder=folder, reading=fresh) == []
    assert fresh.records_read == len(later)  # the new topic, from its start
    assert [r["message_id"] for r in await find_case(bus.settings, "CASE-NEW", folder=folder)] == \
        [r["message_id"] for r in later]


async def test_case_and_trace_through_the_cli(bus: Bus) -> None:
    """The CLI answers from its index as with --no-index; --until before the case finds nothing."""
    ids = await _write_case(bus, "CASE-CLI", NOW - HOUR)
    indexed = await cli("case", "CASE-CLI", "--json", settings=bus.settings)
    scanned = await cli("case", "CASE-CLI", "--json", "--no-index", settings=bus.settings)
    assert indexed.code == scanned.code == 0, (indexed.err, scanned.err)
    assert indexed.json() == scanned.json()
    assert len(indexed.json()) == 5
    traced = await cli("trace", ids["dead"], "--json", settings=bus.settings)
    assert traced.code == 0, traced.err
    assert [v["message_id"] for v in traced.json()["dead_letters"]] == [ids["dead"]]
    early = await cli("case", "CASE-CLI", "--until", "2000-01-01", "--json", settings=bus.settings)
    assert early.code == 1
    assert early.json() == []
    assert "no routing decision about case CASE-CLI on this bus in that time" in early.one_error_line()

