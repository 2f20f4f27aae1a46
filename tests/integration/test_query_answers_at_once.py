"""No lost updates in `bus.queries`: many agencies answer one query at once, through two router
processes, while the deadlines service fires; every answer is kept and the query closes once."""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path
from typing import Any

from aiokafka.partitioner import murmur2
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewPartitions

from liaison.audit_view import query_states
from liaison.sdk import envelope, query, reply
from liaison.security.admin import librdkafka_config
from services.deadlines.lifecycle import QueryState
from tests.bus_harness import Bus, running_bus
from tests.deadlines_harness import HOUR, ManualClock, Running, deadlines, receipts, until
from tests.services_harness import ServiceProcess, start_router_process

REQUESTER = "FR-PN"
OUTCOMES = ("HIT", "NO_HIT", "REFUSED")


def _asked(bus: Bus) -> list[str]:
    return sorted(code for code in bus.directory.agencies if code != REQUESTER)


REPLY_PARTITIONS = 8
"""The reply outboxes get more partitions than the others, so that the router that joins the group
second, which takes half of all the outbox partitions (alerts and queries first), takes reply
outboxes too."""


async def _widen_reply_outboxes(bus: Bus, agencies: list[str]) -> None:
    admin = AdminClient(librdkafka_config(bus.settings))
    futures = admin.create_partitions([NewPartitions(bus.topics.outbox("Reply", agency), REPLY_PARTITIONS)
                                       for agency in agencies])
    for future in futures.values():
        await asyncio.to_thread(future.result)


async def _assignment(bus: Bus) -> dict[str, set[tuple[str, int]]]:
    """Member -> the outbox partitions it owns, in the routers' consumer group."""
    admin = AdminClient(librdkafka_config(bus.settings))
    group = bus.router_settings().group_id
    future = admin.describe_consumer_groups([group], request_timeout=10)[group]
    try:
        described = await asyncio.to_thread(future.result)
    except KafkaException:  # the group's coordinator is still loading: not formed yet
        return {}
    return {m.member_id: {(tp.topic, tp.partition) for tp in m.assignment.topic_partitions}
            for m in described.members}


async def _start_two_routers(bus: Bus, workdir: Path, repliers: list[str], *, timeout_s: float = 90.0,
                             **env: str) -> tuple[list[ServiceProcess], list[set[tuple[str, int]]]]:
    """Two router processes in one group (`env`: their LIAISON_* settings), once each owns its share
    of the outbox partitions."""
    if repliers:
        await _widen_reply_outboxes(bus, repliers)
    agencies = len(bus.directory.agencies)  # each outbox has 2 partitions but the widened ones
    outboxes = agencies * 2 * 2 + (agencies - len(repliers)) * 2 + len(repliers) * REPLY_PARTITIONS
    routers = [start_router_process(bus, workdir, f"router-{i}", **env) for i in (1, 2)]
    deadline = time.monotonic() + timeout_s
    found = await _assignment(bus)
    while len(found) != 2 or not all(found.values()) or sum(map(len, found.values())) != outboxes:
        if time.monotonic() > deadline:
            _stop(routers)
            raise AssertionError(f"the two routers never shared the outboxes: {found}")
        await asyncio.sleep(0.2)
        found = await _assignment(bus)
    return routers, list(found.values())


def _partition(key: bytes) -> int:
    """The outbox partition a producer with the default partitioner writes `key` to."""
    return int(murmur2(key) & 0x7FFFFFFF) % REPLY_PARTITIONS


def _reply_keys(bus: Bus, owners: list[set[tuple[str, int]]], repliers: list[str],
                case_id: str) -> dict[str, bytes]:
    """A record key per replier that puts its reply on an outbox partition of one router or the
    other in turn (the key is the writer's choice; the router keys what it writes itself)."""
    keys: dict[str, bytes] = {}
    for i, agency in enumerate(repliers):
        topic = bus.topics.outbox("Reply", agency)
        for owned in (owners[i % 2], owners[(i + 1) % 2]):
            found = next((key for n in range(1000) if (topic, _partition(key := f"{case_id}.{n}".encode()))
                          in owned), None)
            if found is not None:
                keys[agency] = found
                break
    routed_by = [sum((bus.topics.outbox("Reply", a), _partition(k)) in owned for a, k in keys.items())
                 for owned in owners]
    assert len(keys) == len(repliers)
    assert all(routed_by), f"replies per router: {routed_by}"
    return keys


def _replies(query_id: str, case_id: str, agencies: list[str]) -> dict[str, dict[str, Any]]:
    """One final reply per agency, the outcomes mixed."""
    out = {}
    for i, agency in enumerate(agencies):
        outcome = OUTCOMES[i % len(OUTCOMES)]
        out[agency] = reply(envelope(agency, correlation_id=query_id, case_id=case_id), outcome,
                            refusal_ground="NOT_AVAILABLE" if outcome == "REFUSED" else None,
                            information="seen in Lyon" if outcome == "HIT" else None)
    return out


async def _ask(bus: Bus, svc: Running, case_id: str) -> QueryState:
    """FR-PN asks every other agency; returns the query once the deadlines service holds it."""
    env = envelope(REQUESTER, to=_asked(bus), case_id=case_id)
    q = query(env, "Who rented the white van?", deadline=env["created_at"] + HOUR)
    await bus.send("Query", q)
    qid = q["envelope"]["message_id"]
    await until(lambda: svc.service.view(qid) is not None, 60, lambda: f"query {qid} not seen")
    found = svc.service.view(qid)
    assert found is not None
    assert len(found.requested) >= 12, found.requested
    return found


async def _notices(bus: Bus, agencies: list[str], query_id: str) -> dict[str, list[tuple[str, str | None]]]:
    """Per agency, the deadline notices about the query it received (kind, agency concerned); read
    after a settle time, so that a duplicate would show."""
    found = await asyncio.gather(*(receipts(bus, agency, 1) for agency in agencies))
    return {agency: sorted((r["kind"], r["recipient"]) for r in got
                           if r["envelope"]["correlation_id"] == query_id
                           and r["envelope"]["originator"] == "BUS.DEADLINES")
            for agency, got in zip(agencies, found, strict=True)}


async def _send_all(bus: Bus, replies: list[dict[str, Any]], keys: dict[str, bytes]) -> None:
    """Every reply at once, each to its agency's outbox under the key chosen for it."""
    await asyncio.gather(*(
        bus.send_raw(bus.topics.outbox("Reply", r["envelope"]["originator"]), bus.codec.encode("Reply", r),
                     key=keys[r["envelope"]["originator"]]) for r in replies))


async def _closed(svc: Running, query_id: str, bus: Bus) -> dict[str, Any]:
    """Wait for the closing notice to be committed; the query's record as a reader assembles it."""
    await until(lambda: svc.metric("liaison_deadlines_closed_total") >= 1, 90,
                lambda: f"not closed: {svc.service.view(query_id)}")
    return (await query_states(bus.settings, [query_id]))[query_id]


def _assert_every_answer_kept(record: dict[str, Any], replies: dict[str, dict[str, Any]]) -> None:
    assert {a: x["outcome"] for a, x in record["answers"].items()} == {
        a: r["outcome"] for a, r in replies.items()}
    assert record["state"] == "ANSWERED"
    assert record["closed_notified"] is True
    assert record["closed_at"] == max(x["at"] for x in record["answers"].values())


async def test_every_answer_is_kept_and_the_query_closes_once(kafka_bootstrap: str, tmp_path: Path) -> None:
    """FR-PN asks 14 agencies; all answer at once through two routers while the reminders fire."""
    async with running_bus(kafka_bootstrap, router=False, partitions=2) as bus:
        routers, owners = await _start_two_routers(bus, tmp_path, _asked(bus))
        try:
            clock = ManualClock(time.time())
            async with deadlines(bus, clock) as svc:
                asked = await _ask(bus, svc, "VAN-1")
                qid, requested = asked.query_id, list(asked.requested)
                replies = _replies(qid, "VAN-1", requested)
                keys = _reply_keys(bus, owners, requested, "VAN-1")
                remind_at = asked.reminder_at(svc.service.settings.reminder_share)
                await clock.sleeping_until(remind_at)

                # Half the replies are on their way when the reminders fall due, half follow.
                first = asyncio.create_task(_send_all(bus, [replies[a] for a in requested[::2]], keys))
                clock.set(remind_at / 1000)
                await _send_all(bus, [replies[a] for a in requested[1::2]], keys)
                await first

                record = await _closed(svc, qid, bus)
                _assert_every_answer_kept(record, replies)
                assert svc.service.view(qid) is None  # no timer left to fire

                clock.set(asked.deadline / 1000 + 1)  # the deadline passes after everyone answered
                fr = await receipts(bus, REQUESTER, len(requested) + 1)
                about = [(r["kind"], r["recipient"]) for r in fr if r["envelope"]["correlation_id"] == qid
                         and r["envelope"]["originator"] == "BUS.DEADLINES"]
                assert about == [("CLOSED", None)]
                assert all(f"{a} {replies[a]['outcome']}" in next(
                    r["reason"] for r in fr if r["kind"] == "CLOSED") for a in requested)
                notices = await _notices(bus, requested, qid)
                assert {a: n for a, n in notices.items() if n} == {
                    a: [("REMINDER", REQUESTER)] for a in record["reminded"]}
                assert svc.metric("liaison_deadlines_overdue_total") == 0
                assert svc.metric("liaison_deadlines_reminders_total") == len(record["reminded"])
                inbox = await bus.read(bus.topics.inbox("Reply", REQUESTER), len(requested), settle_s=1.0)
                senders = collections.Counter(r["envelope"]["originator"] for _, r in inbox)
                assert senders == dict.fromkeys(requested, 1)
        finally:
            _stop(routers)


async def test_a_deadline_passing_while_answers_arrive_warns_only_the_late(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    """Half the agencies answered before the deadline; the rest answer while it passes. Those who
    answered in time hear nothing; each late one at most one overdue notice; the query closes once."""
    async with running_bus(kafka_bootstrap, router=False, partitions=2) as bus:
        routers, owners = await _start_two_routers(bus, tmp_path, _asked(bus))
        try:
            clock = ManualClock(time.time())
            async with deadlines(bus, clock) as svc:
                asked = await _ask(bus, svc, "VAN-2")
                qid, requested = asked.query_id, list(asked.requested)
                replies = _replies(qid, "VAN-2", requested)
                keys = _reply_keys(bus, owners, requested, "VAN-2")
                early, late = requested[::2], requested[1::2]
                await _send_all(bus, [replies[a] for a in early], keys)
                await until(lambda: set(early) <= _final_answers(svc, qid), 60,
                            lambda: f"answers seen: {_final_answers(svc, qid)}")

                sending = asyncio.create_task(_send_all(bus, [replies[a] for a in late], keys))
                clock.set(asked.deadline / 1000)
                await sending

                record = await _closed(svc, qid, bus)
                _assert_every_answer_kept(record, replies)
                notices = await _notices(bus, [*requested, REQUESTER], qid)
                warned = {a for a in requested if notices[a]}
                assert warned <= set(late)
                assert warned == set(record["overdue"])
                assert all(notices[a] == [("OVERDUE", a)] for a in warned)
                assert notices[REQUESTER] == sorted([("CLOSED", None), *(("OVERDUE", a) for a in warned)])
                assert svc.metric("liaison_deadlines_reminders_total") == 0  # the overdue notice replaces it
        finally:
            _stop(routers)


def _final_answers(svc: Running, query_id: str) -> set[str]:
    view = svc.service.view(query_id)
    return set() if view is None else set(view.final_answers)


def _stop(routers: list[ServiceProcess]) -> None:
    for router in routers:
        router.stop()
    for router in routers:
        assert "Traceback" not in router.log_text(), router.log_text()[-3000:]
