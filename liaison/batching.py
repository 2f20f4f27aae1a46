"""Send many records through aiokafka's batch API: one BatchBuilder per partition, not one call each.

`AIOKafkaProducer.send()` costs tens of microseconds per record in Python; building batches
ourselves cuts that to a few. Partitions are chosen exactly as Kafka's Java client does (murmur2
of the key), so a case lands on the same partition whoever writes it.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

Record = tuple[str, bytes | None, bytes | None]  # topic, key, value


class BatchSender:
    """Groups records by topic-partition and submits each group as whole batches."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer
        self._partitions: dict[str, int] = {}
        self._round_robin = itertools.count()

    async def _partition_count(self, topic: str) -> int:
        count = self._partitions.get(topic)
        if count is None:
            await self.producer.client._wait_on_metadata(topic)  # private, as send() itself does
            count = len(self.producer.client.cluster.partitions_for_topic(topic) or ()) or 1
            self._partitions[topic] = count
        return count

    async def send(self, records: Iterable[Record]) -> list[asyncio.Future[object]]:
        """Queue every record; the futures resolve when the broker has them (or the txn fails)."""
        groups: dict[tuple[str, int], list[tuple[bytes | None, bytes | None]]] = defaultdict(list)
        hashes: dict[bytes, int] = {}
        for topic, key, value in records:
            count = await self._partition_count(topic)
            if key is None:
                partition = next(self._round_robin) % count
            else:
                digest = hashes.get(key)
                if digest is None:
                    digest = hashes[key] = murmur2(key) & 0x7FFFFFFF
                partition = digest % count
            groups[(topic, partition)].append((key, value))
        futures: list[asyncio.Future[object]] = []
        for (topic, partition), items in groups.items():
            batch = self.producer.create_batch()
            for key, value in items:
                if batch.append(key=key, value=value, timestamp=None) is None:  # batch full
                    futures.append(await self.producer.send_batch(batch, topic, partition=partition))
                    batch = self.producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
            futures.append(await self.producer.send_batch(batch, topic, partition=partition))
        return futures
