"""Where a store resumes reading its topic: the positions it keeps with its values, if they still hold.

A store's positions mean something only for the topic they were read from: another cluster, a topic
deleted and created again, or records deleted before they were read make them wrong, and a store
that resumed from them would mix two histories. The store records its source (cluster, topic, and
the topic's id when the caller knows it); a store whose source or positions do not match is emptied
and read again from the start.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.protocol.metadata import MetadataRequest

from liaison.store import Store

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Resume:
    """What a store holds of a topic, and the topic's offsets when that was checked."""

    held: dict[int, int]  # partition -> next offset to read; empty when the store was emptied
    first: dict[TopicPartition, int]
    end: dict[TopicPartition, int]

    def start(self, tp: TopicPartition) -> int:
        """Where reading `tp` resumes: after what the store holds, else at the topic's first record."""
        return self.held.get(tp.partition, self.first[tp])


async def cluster_id(consumer: AIOKafkaConsumer, topic: str, fallback: str) -> str:
    """The cluster's id (Metadata v2+), so that a store never mixes two clusters' data; `fallback`
    (the bootstrap servers) when the broker does not say."""
    client = consumer._client  # aiokafka has no public call for the cluster id
    try:
        response = await client.send(client.get_random_node(), MetadataRequest([topic], False))
    except KafkaError:
        return fallback
    return str(getattr(response, "cluster_id", None) or fallback)


async def resume(consumer: AIOKafkaConsumer, store: Store, partitions: Sequence[TopicPartition],
                 source: dict[str, Any]) -> Resume:
    """The positions `store` may resume `partitions` from; the store is emptied (and `source`
    recorded) when it came from another source or holds positions the topic no longer has."""
    held = store.positions()
    first = await consumer.beginning_offsets(list(partitions))
    end = await consumer.end_offsets(list(partitions))
    valid = store.source() == source and all(
        first[tp] <= held[tp.partition] <= end[tp] for tp in partitions if tp.partition in held)
    if not valid:
        if held or store.source() is not None:
            log.warning("state store does not match the topic; reading it again from the start",
                        topic=source.get("topic"), held=store.source())
        store.reset(source)
        held = {}
    return Resume({tp.partition: held[tp.partition] for tp in partitions if tp.partition in held},
                  first, end)
