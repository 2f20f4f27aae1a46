"""Create the bus's topics on purpose (the broker's auto-creation is off), idempotently, and keep the
configs the bus sets on them (retention, compaction) in line with the settings and the policy."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from liaison.core.settings import KafkaSettings
from liaison.errors import LiaisonError
from liaison.replication import MIN_INSYNC, Replication
from liaison.topics import TopicSpec

log = structlog.get_logger(__name__)
T = TypeVar("T")

CREATE_TOPICS_CHUNK = 500
"""Topics per CreateTopics request. A KRaft controller refuses an operation of more than 10,000
metadata records (one per topic, one per partition, one per config), so a bulk creation is cut up."""
CREATE_TOPICS_IN_FLIGHT = 4
"""Requests outstanding at once: enough to keep the controller busy, few enough to time out cleanly."""


def chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """`items` cut into consecutive slices of at most `size` (none for no items)."""
    return [items[i:i + size] for i in range(0, len(items), size)]


async def live_brokers(admin: AIOKafkaAdminClient) -> int:
    """Brokers the cluster's metadata lists now (a broker that is down is not among them)."""
    return len((await admin.describe_cluster())["brokers"])


async def topic_replication(settings: KafkaSettings, admin: AIOKafkaAdminClient, *,
                            factor: int | None = None) -> Replication:
    """The replication the bus's topics get on this cluster: `factor`, else the settings' rule."""
    return Replication.for_cluster(await live_brokers(admin),
                                   factor=factor if factor is not None else settings.replication_factor,
                                   min_insync=settings.min_insync_replicas)


def replicated(spec: TopicSpec, replication: Replication) -> TopicSpec:
    """`spec` with the bus's `min.insync.replicas`, unless the spec sets its own."""
    return replace(spec, config=replication.topic_config() | dict(spec.config))


async def ensure_topics(settings: KafkaSettings, specs: Iterable[TopicSpec], *,
                        replication: int | None = None) -> list[str]:
    """Create the topics that do not exist yet; return the names created now.

    Each gets the replication factor and `min.insync.replicas` of `topic_replication` (`replication`
    overrides the factor). Missing topics go out in CreateTopics requests of `CREATE_TOPICS_CHUNK`, a
    few at a time: a thousand agencies' 7,000 topics are created without one request too large for
    the controller.
    """
    wanted = {spec.name: spec for spec in specs}
    admin = AIOKafkaAdminClient(**settings.kafka_kwargs())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [spec for name, spec in wanted.items() if name not in existing]
        if not missing:
            return []
        plan = await topic_replication(settings, admin, factor=replication)
        missing = [replicated(spec, plan) for spec in missing]
        in_flight = asyncio.Semaphore(CREATE_TOPICS_IN_FLIGHT)

        async def create(chunk: Sequence[TopicSpec]) -> list[str]:
            async with in_flight:
                response = await admin.create_topics([
                    NewTopic(spec.name, num_partitions=spec.partitions, replication_factor=plan.factor,
                             topic_configs=spec.config) for spec in chunk
                ])
            created = []
            for name, code, *rest in response.topic_errors:
                if code == 0:
                    created.append(name)
                elif code != TopicAlreadyExistsError.errno:  # created concurrently: what we wanted
                    message = rest[0] if rest and rest[0] else f"error code {code}"
                    raise LiaisonError(f"could not create topic {name}: {message}")
            return created

        done = await asyncio.gather(*(create(c) for c in chunks(missing, CREATE_TOPICS_CHUNK)))
        return [name for names in done for name in names]
    finally:
        await admin.close()


@dataclass(frozen=True)
class ConfigChange:
    """One topic config set to what the bus wants; `old` None when the broker had no value."""

    topic: str
    key: str
    old: str | None
    new: str

    def __str__(self) -> str:
        return f"{self.topic}: {self.key} {self.old if self.old is not None else '(unset)'} -> {self.new}"


@dataclass(frozen=True)
class Reconciled:
    created: list[str]
    changed: list[ConfigChange]


def _same(have: str | None, want: str) -> bool:
    """Equal as the broker means it: `0.1` and `0.10` are one ratio, `-1` and `-1` one retention."""
    if have == want:
        return True
    if have is None:
        return False
    try:
        return float(have) == float(want)
    except ValueError:
        return False


def config_drift(specs: Iterable[TopicSpec], current: Mapping[str, Mapping[str, str | None]]
                 ) -> list[ConfigChange]:
    """The configs the bus sets that differ on the broker; only the keys a spec names are compared.

    `current` maps each existing topic to its described configs; a topic missing from it is skipped
    (it is created with the right configs, or it is not ours to change).
    """
    changes = []
    for spec in specs:
        if (have := current.get(spec.name)) is None:
            continue
        changes += [ConfigChange(spec.name, key, have.get(key), want)
                    for key, want in sorted(spec.config.items()) if not _same(have.get(key), want)]
    return changes


async def align_topic_configs(settings: KafkaSettings, specs: Iterable[TopicSpec], *,
                              timeout_s: float = 15.0) -> list[ConfigChange]:
    """Set the configs the bus sets on existing topics where the broker's differ; return the changes.

    `min.insync.replicas` is among them: the settings' value, else the rule of `Replication` for
    the replicas the topic has (so a broker down during the run lowers nothing).

    Incremental (`IncrementalAlterConfigs`): only the keys that differ are set, anything else an
    operator configured on the topic stays. Needs DESCRIBE_CONFIGS and ALTER_CONFIGS on the topics
    (the admin has them). aiokafka has only the non-incremental call, which would drop every other
    config of the topic, so this uses librdkafka's admin client, in a worker thread.
    """
    from confluent_kafka import KafkaException  # noqa: PLC0415  # librdkafka loads only when needed
    from confluent_kafka.admin import (  # noqa: PLC0415
        AdminClient,
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        ResourceType,
    )

    from liaison.security.admin import librdkafka_config  # noqa: PLC0415

    specs = list(specs)
    if not specs:
        return []

    def describe(admin: AdminClient, topics: Iterable[str]) -> dict[str, dict[str, str | None]]:
        resources = [ConfigResource(ResourceType.TOPIC, name) for name in topics]
        if not resources:
            return {}
        described: dict[Any, Any] = admin.describe_configs(resources, request_timeout=timeout_s)
        return {resource.name: {k: e.value for k, e in future.result().items()}
                for resource, future in described.items()}

    def work() -> list[ConfigChange]:
        admin = AdminClient(librdkafka_config(settings))
        existing = admin.list_topics(timeout=timeout_s).topics
        with_config = [with_insync(spec, existing[spec.name]) for spec in specs if spec.name in existing]
        current = describe(admin, [s.name for s in with_config])
        changes = config_drift(with_config, current)
        by_topic: dict[str, list[ConfigEntry]] = {}
        for c in changes:
            by_topic.setdefault(c.topic, []).append(
                ConfigEntry(c.key, c.new, incremental_operation=AlterConfigOpType.SET))
        if not by_topic:
            return []
        altered: dict[Any, Any] = admin.incremental_alter_configs(
            [ConfigResource(ResourceType.TOPIC, topic, incremental_configs=entries)
             for topic, entries in by_topic.items()], request_timeout=timeout_s)
        for future in altered.values():
            future.result()
        # The controller has the change; the broker answering describes applies it a moment later.
        # Return once it shows, so that whoever reads the topic next sees the new values.
        deadline = time.monotonic() + timeout_s
        while config_drift([s for s in with_config if s.name in by_topic], describe(admin, by_topic)):
            if time.monotonic() >= deadline:
                raise LiaisonError(f"the broker took the new configs of {', '.join(sorted(by_topic))} but "
                                   f"did not show them within {timeout_s:.0f} s")
            time.sleep(0.1)
        return changes

    def with_insync(spec: TopicSpec, metadata: Any) -> TopicSpec:
        if MIN_INSYNC in spec.config:
            return spec
        replicas = max((len(p.replicas) for p in metadata.partitions.values()), default=1)
        return replicated(spec, Replication.for_cluster(replicas, factor=replicas,
                                                        min_insync=settings.min_insync_replicas))

    try:
        changes = await asyncio.to_thread(work)
    except KafkaException as exc:
        raise LiaisonError(f"could not align topic configs: {exc.args[0] if exc.args else exc}") from None
    for change in changes:
        log.info("topic config changed", topic=change.topic, key=change.key, old=change.old, new=change.new)
    return changes


async def reconcile_topics(settings: KafkaSettings, specs: Iterable[TopicSpec], *,
                           replication: int | None = None) -> Reconciled:
    """Create missing topics, then set the configs the bus sets on those that already existed.

    What `liaison up` runs for the bus topics, so that a retention changed in the policy
    (`audit.retention_days`) reaches a `bus.audit` created before the change.
    """
    wanted = list(specs)
    created = await ensure_topics(settings, wanted, replication=replication)
    changed = await align_topic_configs(settings, [s for s in wanted if s.name not in created])
    return Reconciled(created, changed)


async def topic_ids(settings: KafkaSettings, topics: Sequence[str], *,
                    timeout_s: float = 10.0) -> dict[str, str]:
    """The id the cluster gave each topic when it created it: a topic deleted and created again
    under the same name has a new one, where its name and offsets may look the same.

    aiokafka speaks Metadata up to v5, which has no topic ids; librdkafka's DescribeTopics has them.
    """
    from confluent_kafka import KafkaException, TopicCollection  # noqa: PLC0415  # loads librdkafka
    from confluent_kafka.admin import AdminClient  # noqa: PLC0415

    from liaison.security.admin import librdkafka_config  # noqa: PLC0415

    def work() -> dict[str, str]:
        # warnings and errors only: its notices on stderr would break a command's one-line output
        admin = AdminClient({**librdkafka_config(settings), "log_level": 4})
        described: dict[str, Any] = admin.describe_topics(TopicCollection(list(topics)),
                                                          request_timeout=timeout_s)
        return {name: str(future.result().topic_id) for name, future in described.items()}

    try:
        return await asyncio.to_thread(work)
    except KafkaException as exc:
        raise LiaisonError(f"could not describe {', '.join(topics)}: "
                           f"{exc.args[0] if exc.args else exc}") from None
