"""What an operator asks of a cluster: which node is the active controller, which of the bus's
topics lack replicas. Read with the admin's credential; nothing is changed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias

from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import CompactArray, CompactString, Int16, Int32, Int64, Schema, TaggedFields

from liaison.core.settings import KafkaSettings
from liaison.errors import LiaisonError

METADATA_TOPIC = "__cluster_metadata"


class _DescribeQuorumResponse_v0(Response):  # type: ignore[misc]
    API_KEY = 55
    API_VERSION = 0
    _REPLICA = (("replica_id", Int32), ("log_end_offset", Int64), ("tags", TaggedFields))
    SCHEMA = Schema(
        ("error_code", Int16),
        ("topics", CompactArray(
            ("topic_name", CompactString("utf-8")),
            ("partitions", CompactArray(
                ("partition_index", Int32), ("error_code", Int16), ("leader_id", Int32),
                ("leader_epoch", Int32), ("high_watermark", Int64),
                ("current_voters", CompactArray(*_REPLICA)), ("observers", CompactArray(*_REPLICA)),
                ("tags", TaggedFields))),
            ("tags", TaggedFields))),
        ("tags", TaggedFields),
    )


class _DescribeQuorumRequest_v0(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = 55
    API_VERSION = 0
    RESPONSE_TYPE = _DescribeQuorumResponse_v0
    SCHEMA = Schema(
        ("topics", CompactArray(
            ("topic_name", CompactString("utf-8")),
            ("partitions", CompactArray(("partition_index", Int32), ("tags", TaggedFields))),
            ("tags", TaggedFields))),
        ("tags", TaggedFields),
    )


_Struct: TypeAlias = _DescribeQuorumRequest_v0


class DescribeQuorumRequest(Request[_Struct]):  # type: ignore[misc]
    """KIP-595's DescribeQuorum, which a broker forwards to the active controller (aiokafka lacks it)."""

    API_KEY: ClassVar[int] = 55

    def build(self, request_struct_class: type[_Struct]) -> _Struct:
        return request_struct_class([(METADATA_TOPIC, [(0, {})], {})], {})


@dataclass(frozen=True)
class Quorum:
    leader: int
    epoch: int
    voters: tuple[int, ...]


async def describe_quorum(settings: KafkaSettings) -> Quorum:
    """The KRaft quorum as the active controller reports it: its own id, the epoch, the voters."""
    from aiokafka import AIOKafkaClient  # noqa: PLC0415

    client = AIOKafkaClient(**settings.kafka_kwargs())
    await client.bootstrap()
    try:
        node = client.get_random_node()
        if node is None:
            raise LiaisonError(f"no broker answered at {settings.bootstrap_servers}")
        response: Any = await client.send(node, DescribeQuorumRequest())
    finally:
        await client.close()
    partition = response.topics[0][1][0]
    code = response.error_code or partition[1]
    if code:
        raise LiaisonError(f"DescribeQuorum failed with error code {code}")
    return Quorum(leader=partition[2], epoch=partition[3], voters=tuple(v[0] for v in partition[5]))


@dataclass(frozen=True)
class ReplicaProblem:
    topic: str
    problem: str

    def __str__(self) -> str:
        return f"{self.topic}: {self.problem}"


def replica_problems(topics: Mapping[str, Any], wanted_factor: int,
                     owned: Callable[[str], bool]) -> list[ReplicaProblem]:
    """The bus's topics (`owned`) that have a partition out of sync, or fewer replicas than wanted.

    `topics` maps names to librdkafka's TopicMetadata (`partitions` with `replicas` and `isrs`).
    """
    problems = []
    for name in sorted(filter(owned, topics)):
        partitions = topics[name].partitions.values()
        lagging = sorted(p.id for p in partitions if len(p.isrs) < len(p.replicas))
        fewest = min((len(p.replicas) for p in partitions), default=0)
        if lagging:
            problems.append(ReplicaProblem(name, f"under-replicated partitions {lagging}"))
        if fewest < wanted_factor:
            problems.append(ReplicaProblem(name, f"{fewest} replicas, {wanted_factor} configured"))
    return problems


async def replication_report(settings: KafkaSettings, *, timeout_s: float = 10.0) -> list[ReplicaProblem]:
    """`replica_problems` of the bus of `settings`, against its replication rule on this cluster.

    With the factor left to the rule, a broker that is down lowers what is wanted: a topic then
    shows as under-replicated, not as short of replicas.
    """
    from confluent_kafka.admin import AdminClient  # noqa: PLC0415

    from liaison.replication import Replication  # noqa: PLC0415
    from liaison.security.admin import librdkafka_config  # noqa: PLC0415

    def work() -> list[ReplicaProblem]:
        metadata = AdminClient(librdkafka_config(settings)).list_topics(timeout=timeout_s)
        wanted = Replication.for_cluster(len(metadata.brokers), factor=settings.replication_factor,
                                         min_insync=settings.min_insync_replicas).factor
        return replica_problems(metadata.topics, wanted, settings.topics.owns)

    return await asyncio.to_thread(work)
