"""Create the bus's topics on purpose (the broker's auto-creation is off), idempotently."""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from liaison.core.settings import KafkaSettings
from liaison.errors import LiaisonError
from liaison.topics import TopicSpec


async def ensure_topics(settings: KafkaSettings, specs: Iterable[TopicSpec], *,
                        replication: int = 1) -> list[str]:
    """Create the topics that do not exist yet; return the names created now."""
    wanted = {spec.name: spec for spec in specs}
    admin = AIOKafkaAdminClient(**settings.kafka_kwargs())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [spec for name, spec in wanted.items() if name not in existing]
        if not missing:
            return []
        response = await admin.create_topics([
            NewTopic(spec.name, num_partitions=spec.partitions, replication_factor=replication,
                     topic_configs=spec.config) for spec in missing
        ])
        created = []
        for name, code, *rest in response.topic_errors:
            if code == 0:
                created.append(name)
            elif code != TopicAlreadyExistsError.errno:  # created concurrently: what we wanted
                message = rest[0] if rest and rest[0] else f"error code {code}"
                raise LiaisonError(f"could not create topic {name}: {message}")
        return created
    finally:
        await admin.close()
