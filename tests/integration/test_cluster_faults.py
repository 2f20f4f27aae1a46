"""Faults of a three-node cluster under load: no message lost, none duplicated, each receipt and
audit record exactly once, and how long routing stalled (kept in `.run/bench/cluster_faults.json`).

One secured cluster of three KRaft nodes, with the registry, router and deadlines service as
processes, serves every test of the module; each test leaves all three nodes running and in sync.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from liaison.cluster_health import describe_quorum
from liaison.codec import Codec
from liaison.local.stack import SERVICES, LocalStack, registry_answers
from tests.cluster_harness import (
    Traffic,
    Verdict,
    busiest_node,
    cluster_stack,
    in_sync,
    kill,
    read_ledger,
    record,
    stack_codec,
    traffic_topics,
)

pytestmark = pytest.mark.integration

RATE = 1500.0
"""Messages per second offered in all: more than the router takes on two cores, so it never idles."""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = cluster_stack(Path(tmp_path_factory.mktemp("cluster")))
    try:
        stack.up(timeout_s=180)
        yield stack
    finally:
        stack.down()


def _assert_exact(verdict: Verdict, *, sent: int | None = None) -> None:
    assert verdict.failed_sends == 0, verdict
    if sent is not None:
        assert verdict.sent == sent, verdict
    assert (verdict.lost, verdict.duplicated, verdict.unreceipted, verdict.unaudited) == (0, 0, 0, 0), verdict


async def _verdict(cluster: LocalStack, codec: Codec, traffic: Traffic) -> Verdict:
    return Verdict.of(traffic, await read_ledger(cluster, codec, traffic.sent, timeout_s=180))


def _judge(cluster: LocalStack, name: str, verdict: Verdict, pids: dict[str, int | None], *,
           sent: int | None = None, **figures: Any) -> None:
    """Keep the figures, then: everything exactly once, and no service restarted."""
    record(name, verdict, **figures)
    _assert_exact(verdict, sent=sent)
    assert _service_pids(cluster) == pids


def _service_pids(stack: LocalStack) -> dict[str, int | None]:
    return {spec.name: stack.service_pid(spec) for spec in SERVICES}


async def _settle(stack: LocalStack) -> None:
    """Every node running again and every replica in sync, for the next test."""
    await asyncio.to_thread(stack.cluster.start, timeout_s=120)
    await in_sync(stack)


OUTAGE_S = 45.0
"""Longer than every client timeout of the services: the router's session and transaction (10 s),
aiokafka's request timeout (40 s) in the registry and the deadlines service."""


async def test_sigkill_of_the_busiest_leader_kept_down_longer_than_the_clients_timeouts(
        cluster: LocalStack) -> None:
    """20,000 messages from seven agencies; the node leading most of their partitions is killed
    early and stays down for OUTAGE_S, while the services ride it out, then comes back."""
    codec = await stack_codec(cluster)
    pids = _service_pids(cluster)
    traffic = Traffic(cluster, codec, rate=RATE / 3, limit=20_000)
    traffic.start()
    try:
        await traffic.wait_sent(2_000, timeout_s=120)
        victim = busiest_node(cluster, traffic_topics(cluster))
        kill(cluster.cluster.node(victim))
        down_since, sent_before = time.monotonic(), len(traffic.sent)
        while time.monotonic() - down_since < OUTAGE_S:  # the outage, watched: no service exits
            assert _service_pids(cluster) == pids, "a service exited while a node was down"
            await asyncio.sleep(1)
        assert len(traffic.sent) > sent_before + 1_000  # agencies kept sending all along
        assert registry_answers(cluster.admin_settings())[0]
        await _settle(cluster)
        await traffic.finished()
        verdict = await _verdict(cluster, codec, traffic)
    finally:
        await traffic.stop()
        await _settle(cluster)
    _judge(cluster, "sigkill_busiest_leader_down_45s", verdict, pids, sent=20_000, node=victim)


async def test_rolling_restart_of_every_node_under_load(cluster: LocalStack) -> None:
    codec = await stack_codec(cluster)
    pids = _service_pids(cluster)
    traffic = Traffic(cluster, codec, rate=RATE / 4)
    traffic.start()
    try:
        await traffic.wait_sent(1_000, timeout_s=120)
        for node in cluster.cluster.brokers:  # as an operator upgrades: one at a time, in sync again first
            await asyncio.to_thread(node.stop, grace_s=30)
            await asyncio.to_thread(node.start, timeout_s=120)
            await in_sync(cluster)
        await traffic.stop()
        verdict = await _verdict(cluster, codec, traffic)
    finally:
        await traffic.stop()
        await _settle(cluster)
    _judge(cluster, "rolling_restart", verdict, pids)


async def test_killing_the_active_controller(cluster: LocalStack) -> None:
    codec = await stack_codec(cluster)
    pids = _service_pids(cluster)
    settings = cluster.admin_settings()
    before = await describe_quorum(settings)
    traffic = Traffic(cluster, codec, rate=RATE, limit=5_000)
    traffic.start()
    try:
        await traffic.wait_sent(1_500, timeout_s=120)
        kill(cluster.cluster.node(before.leader))
        await traffic.finished()
        after = await describe_quorum(settings)
        verdict = await _verdict(cluster, codec, traffic)
    finally:
        await traffic.stop()
        await _settle(cluster)
    assert after.leader != before.leader
    assert after.epoch > before.epoch
    _judge(cluster, "kill_active_controller", verdict, pids, sent=5_000, controller=before.leader,
           new_controller=after.leader)
