"""A secured local cluster with the bus's services, steady traffic between agencies, and the ledger
that says what became of every message: for the fault tests and for `make soak`.

Traffic is alerts, each from one agency to one partner, sent with the sender's own credential
(idempotent producer, `acks=all`). The ledger reads, `read_committed` and with the admin's
credential, each recipient's inbox, each sender's receipts and the audit trail, and checks that
every message sent was delivered once, got one DELIVERED receipt, and one DELIVERED audit record.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from liaison.codec import Codec
from liaison.contract import ready_codec
from liaison.local.broker import BrokerConfig, LocalBroker, free_port
from liaison.local.stack import SERVICES, LocalStack
from liaison.registry_client import RegistryClient
from tests.bench.messages import small

PAIRS: tuple[tuple[str, str], ...] = (
    ("FR-PN", "DE-BKA"), ("DE-BKA", "IT-PS"), ("IT-PS", "ES-CNP"), ("ES-CNP", "NL-KLPD"),
    ("NL-KLPD", "PL-KGP"), ("PL-KGP", "FR-GN"), ("FR-GN", "FR-PN"),
)
"""Who sends to whom: seven agencies, each the sender of one stream and the recipient of another."""


def cluster_stack(home: Path, *, brokers: int = 3, heap_mb: int = 448) -> LocalStack:
    """A secured stack of `brokers` nodes in `home`, on free ports, beside any other stack."""
    return LocalStack(BrokerConfig(home=home / "kafka", heap_mb=heap_mb), run=home, secure=True,
                      registry_port=free_port(), brokers=brokers,
                      broker_ports=[(free_port(), free_port()) for _ in range(brokers)],
                      metrics_ports={spec.name: free_port() for spec in SERVICES})


async def stack_codec(stack: LocalStack) -> Codec:
    async with RegistryClient.from_settings(stack.admin_settings()) as client:
        return await ready_codec(client)


@dataclass(frozen=True)
class Sent:
    sender: str
    recipient: str
    at_ms: int


@dataclass
class Traffic:
    """Alerts along `pairs` at `rate` messages per second in all, until stopped or `limit` sent."""

    stack: LocalStack
    codec: Codec
    rate: float
    pairs: Sequence[tuple[str, str]] = PAIRS
    limit: int | None = None
    sent: dict[str, Sent] = field(default_factory=dict)
    failed: int = 0
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._send(sender, recipient, index))
                       for index, (sender, recipient) in enumerate(self.pairs)]

    async def stop(self) -> None:
        self._stopping.set()
        await self.finished()

    async def finished(self) -> None:
        """Until every stream sent its share (or was stopped)."""
        await asyncio.gather(*self._tasks)

    async def wait_sent(self, count: int, *, timeout_s: float) -> None:
        """Until `count` messages were acknowledged by the cluster (the load is under way)."""
        deadline = time.monotonic() + timeout_s
        while len(self.sent) < count:
            if time.monotonic() > deadline or all(t.done() for t in self._tasks):
                raise AssertionError(f"only {len(self.sent)} of {count} messages sent within {timeout_s} s "
                                     f"({self.failed} sends failed)")
            await asyncio.sleep(0.05)

    async def _send(self, sender: str, recipient: str, index: int) -> None:
        settings = self.stack.agency_settings(sender)
        outbox = settings.topics.outbox("Alert", sender)
        producer = AIOKafkaProducer(**settings.kafka_kwargs(), enable_idempotence=True, linger_ms=5,
                                    request_timeout_ms=60_000)
        await producer.start()
        per_tick = max(1, round(self.rate / len(self.pairs) / 20))  # 20 ticks a second
        streams = len(self.pairs)
        share = None if self.limit is None else self.limit // streams + (index < self.limit % streams)
        sequence = 0
        try:
            while not self._stopping.is_set() and (share is None or sequence < share):
                tick = time.monotonic()
                end = sequence + per_tick
                batch = range(sequence, end if share is None else min(share, end))
                sequence = batch.stop
                await asyncio.gather(*(self._one(producer, outbox, sender, recipient, n) for n in batch))
                await asyncio.sleep(max(0.0, 0.05 - (time.monotonic() - tick)))
        finally:
            await producer.stop()

    async def _one(self, producer: AIOKafkaProducer, outbox: str, sender: str, recipient: str,
                   n: int) -> None:
        record = small(sender, recipient, f"{sender}-CASE-{n // 100}")
        at_ms = int(time.time() * 1000)
        try:
            await producer.send_and_wait(outbox, self.codec.encode("Alert", record),
                                         key=record["envelope"]["case_id"].encode())
        except Exception:  # noqa: BLE001  # a send the cluster did not acknowledge is counted, not lost
            self.failed += 1
        else:
            self.sent[record["envelope"]["message_id"]] = Sent(sender, recipient, at_ms)


@dataclass
class Ledger:
    """What the bus did with the messages of a `Traffic`, read back from the cluster."""

    deliveries: Counter[tuple[str, str]] = field(default_factory=Counter)  # (message id, inbox owner)
    receipts: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (about, kind, recipient)
    audits: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (message, recipient, decision)
    delivered_at: dict[str, int] = field(default_factory=dict)  # message id -> inbox timestamp (ms)

    def complete(self, sent: dict[str, Sent]) -> bool:
        return all((mid, s.recipient) in self.deliveries
                   and (mid, "DELIVERED", s.recipient) in self.receipts
                   and (mid, s.recipient, "DELIVERED") in self.audits for mid, s in sent.items())

    def lost(self, sent: dict[str, Sent]) -> list[str]:
        return sorted(mid for mid, s in sent.items() if (mid, s.recipient) not in self.deliveries)

    def duplicated(self) -> list[Any]:
        """Anything seen more than once: a delivery, a receipt or an audit record."""
        return sorted(k for counter in (self.deliveries, self.receipts, self.audits)
                      for k, n in counter.items() if n > 1)

    def unreceipted(self, sent: dict[str, Sent]) -> list[str]:
        return sorted(mid for mid, s in sent.items() if (mid, "DELIVERED", s.recipient) not in self.receipts)

    def unaudited(self, sent: dict[str, Sent]) -> list[str]:
        return sorted(mid for mid, s in sent.items() if (mid, s.recipient, "DELIVERED") not in self.audits)

    def longest_stall_s(self, sent: dict[str, Sent]) -> float:
        """The longest time none of the messages `sent` was delivered, between their deliveries."""
        times = sorted(self.delivered_at[mid] for mid in sent if mid in self.delivered_at)
        return max((b - a for a, b in itertools.pairwise(times)), default=0) / 1000

    def latency_p99_ms(self, sent: dict[str, Sent]) -> float:
        waits = sorted(self.delivered_at[mid] - s.at_ms for mid, s in sent.items()
                       if mid in self.delivered_at)
        return float(waits[min(len(waits) - 1, int(len(waits) * 0.99))]) if waits else 0.0


async def read_ledger(stack: LocalStack, codec: Codec, sent: dict[str, Sent], *,
                      timeout_s: float = 120.0) -> Ledger:
    """Read until every message sent is accounted for (or the deadline), then on to the ends the
    topics had at that moment, so that a duplicate written before then is counted too."""
    settings = stack.admin_settings()
    topics = settings.topics
    pairs = {(s.sender, s.recipient) for s in sent.values()}
    names = sorted({topics.inbox("Alert", r) for _, r in pairs} | {topics.receipts(s) for s, _ in pairs}
                   | {topics.audit})
    consumer = AIOKafkaConsumer(**settings.kafka_kwargs(), group_id=None, enable_auto_commit=False,
                                isolation_level="read_committed", auto_offset_reset="earliest",
                                max_partition_fetch_bytes=4 * 1024 * 1024)
    await consumer.start()
    ledger = Ledger()
    try:
        partitions = [TopicPartition(t, p) for t in names for p in (consumer.partitions_for_topic(t) or ())]
        if len(partitions) < len(names):  # metadata not there yet for some topic
            await consumer._client.force_metadata_update()
            partitions = [TopicPartition(t, p) for t in names
                          for p in (consumer.partitions_for_topic(t) or ())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning()
        deadline = time.monotonic() + timeout_s
        while not ledger.complete(sent) and time.monotonic() < deadline:
            _account(ledger, codec, topics.audit, await consumer.getmany(timeout_ms=200, max_records=5000))
        ends = await consumer.end_offsets(partitions)
        while any(await _behind(consumer, ends)) and time.monotonic() < deadline + 30:
            _account(ledger, codec, topics.audit, await consumer.getmany(timeout_ms=200, max_records=5000))
    finally:
        await consumer.stop()
    return ledger


async def _behind(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> list[bool]:
    return [await consumer.position(tp) < end for tp, end in ends.items()]


def _account(ledger: Ledger, codec: Codec, audit_topic: str, batch: dict[TopicPartition, list[Any]]) -> None:
    for tp, records in batch.items():
        for rec in records:
            name, value = codec.decode(rec.value)
            if name == "Alert":
                mid = value["envelope"]["message_id"]
                ledger.deliveries[(mid, tp.topic.rsplit(".", 1)[1])] += 1
                ledger.delivered_at[mid] = rec.timestamp
            elif name == "Receipt":
                ledger.receipts[(value["envelope"]["correlation_id"], value["kind"], value["recipient"])] += 1
            elif name == "AuditRecord" and tp.topic == audit_topic:
                ledger.audits[(value["message_id"], value["recipient"], value["decision"])] += 1


@dataclass(frozen=True)
class Verdict:
    """Figures of one run, as the fault tests assert them and `make soak` reports them."""

    sent: int
    failed_sends: int
    lost: int
    duplicated: int
    unreceipted: int
    unaudited: int
    longest_stall_s: float
    p99_ms: float

    @classmethod
    def of(cls, traffic: Traffic, ledger: Ledger) -> Verdict:
        sent = traffic.sent
        return cls(len(sent), traffic.failed, len(ledger.lost(sent)), len(ledger.duplicated()),
                   len(ledger.unreceipted(sent)), len(ledger.unaudited(sent)),
                   ledger.longest_stall_s(sent), ledger.latency_p99_ms(sent))


def busiest_node(stack: LocalStack, topics: Iterable[str]) -> int:
    """The node that leads the most partitions of `topics`."""
    from confluent_kafka.admin import AdminClient  # noqa: PLC0415

    from liaison.security.admin import librdkafka_config  # noqa: PLC0415

    wanted = set(topics)
    metadata = AdminClient(librdkafka_config(stack.admin_settings())).list_topics(timeout=10)
    leaders = Counter(p.leader for name, t in metadata.topics.items() if name in wanted
                      for p in t.partitions.values())
    return leaders.most_common(1)[0][0]


def traffic_topics(stack: LocalStack, pairs: Sequence[tuple[str, str]] = PAIRS) -> list[str]:
    """The partitions the traffic's messages pass through: outboxes, inboxes, receipts, the router's state."""
    topics = stack.admin_settings().topics
    return ([topics.outbox("Alert", s) for s, _ in pairs] + [topics.inbox("Alert", r) for _, r in pairs]
            + [topics.receipts(s) for s, _ in pairs] + [topics.routed, topics.audit])


def kill(node: LocalBroker) -> None:
    """SIGKILL: no controlled shutdown, no flush, as when the machine fails."""
    import os  # noqa: PLC0415
    import signal  # noqa: PLC0415

    from liaison.local.process import is_alive  # noqa: PLC0415

    pid = node.pid
    assert pid is not None, f"node {node.config.node_id} is not running"
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while is_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    node.config.pid_file.unlink(missing_ok=True)


async def in_sync(stack: LocalStack, *, timeout_s: float = 120.0) -> None:
    """Until every bus topic has all its replicas in sync again (after a node came back)."""
    from liaison.cluster_health import replication_report  # noqa: PLC0415

    deadline = time.monotonic() + timeout_s
    while problems := await replication_report(stack.admin_settings()):
        if time.monotonic() > deadline:
            raise AssertionError(f"replicas still out of sync after {timeout_s} s: {problems[:5]}")
        await asyncio.sleep(0.5)


@contextlib.contextmanager
def running(stack: LocalStack, *, timeout_s: float = 180.0) -> Any:
    """The stack up for the block, and down after it whatever happened."""
    try:
        stack.up(timeout_s=timeout_s)
        yield stack
    finally:
        stack.down()


def record(name: str, verdict: Verdict, **extra: Any) -> None:
    """Keep a fault test's figures in `.run/bench/cluster_faults.json`, one entry per test."""
    import json  # noqa: PLC0415
    from dataclasses import asdict  # noqa: PLC0415

    from liaison.local.paths import run_dir  # noqa: PLC0415

    path = run_dir() / "bench" / "cluster_faults.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    figures = json.loads(path.read_text()) if path.is_file() else {}
    figures[name] = asdict(verdict) | extra
    path.write_text(json.dumps(figures, indent=2) + "\n")
