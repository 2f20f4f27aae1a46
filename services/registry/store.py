"""The registry's state kept in the compacted `_schemas` topic: read to its end at start, then followed.

Every change is produced to the topic first and applied only when this instance's own consumer reads
it back, so a restarted or second instance rebuilds exactly the same ids and versions. Writes in one
process go one at a time under a lock, after catching up with the topic's end.
Known limit: two instances writing at the same moment may both take the same next id (Confluent
avoids it by electing one leader that does all the writes).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from liaison.core.lifecycle import AsyncResource
from liaison.errors import BrokerUnavailable, ConfigError, DecodeError, RegistryStoreError
from liaison.kafka_admin import topic_replication
from services.registry.compat import (
    AvroSchema,
    CompatibilityLevel,
    CompatibilityResult,
    check_compatibility,
)
from services.registry.settings import RegistrySettings
from services.registry.state import (
    Record,
    RegistryState,
    SubjectVersion,
    config_record,
    schema_record,
    schema_tombstone,
)

log = structlog.get_logger(__name__)

TOPIC_ALREADY_EXISTS = 36  # Kafka protocol error code


class Refusal(Exception):
    """A request the registry answers with a Confluent error body (`error_code`, `message`).

    `reason` is set when a limit refused it (counted and logged as such); `retry_after_s` becomes
    a `Retry-After` header.
    """

    def __init__(self, status: int, error_code: int, message: str, *, reason: str | None = None,
                 retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message
        self.reason = reason
        self.retry_after_s = retry_after_s


Checker = Callable[[CompatibilityLevel, AvroSchema, Mapping[int, AvroSchema]], Awaitable[CompatibilityResult]]


async def check_here(level: CompatibilityLevel, candidate: AvroSchema,
                     existing: Mapping[int, AvroSchema]) -> CompatibilityResult:
    """Check on the event loop: only for trusted schemas (tests, tools); the server uses its workers."""
    return check_compatibility(level, candidate, existing)


def subject_not_found(subject: str) -> Refusal:
    return Refusal(404, 40401, f"Subject '{subject}' not found.")


def version_not_found(version: int | str) -> Refusal:
    return Refusal(404, 40402, f"Version {version} not found.")


def schema_not_found(schema_id: int | None = None) -> Refusal:
    return Refusal(404, 40403, "Schema not found" if schema_id is None else f"Schema {schema_id} not found")


class SchemaStore(AsyncResource):
    """The in-memory `RegistryState` plus the Kafka clients that fill it and write through it."""

    def __init__(self, settings: RegistrySettings, *, on_bad_record: Callable[[], None] | None = None,
                 checker: Checker = check_here) -> None:
        self.settings = settings
        self._checker = checker
        self.topic = settings.registry_topic
        self.state = RegistryState(settings.registry_default_compatibility)
        self._tp = TopicPartition(self.topic, 0)
        self._on_bad_record = on_bad_record
        self._consumer: AIOKafkaConsumer | None = None
        self._offsets: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._reader: asyncio.Task[None] | None = None
        self._position = 0  # next offset the reader will apply
        self._failure: RegistryStoreError | None = None
        self._progress = asyncio.Condition()
        self._write_lock = asyncio.Lock()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Make sure the topic exists and is compacted, then read it to the end it had at start.

        Raises:
            BrokerUnavailable: the broker did not answer.
            ConfigError: the topic exists but is not a single compacted partition.
            RegistryStoreError: the topic could not be read to its end in time.
        """
        if self._reader is not None:
            return
        kwargs = self.settings.kafka_kwargs()
        try:
            await self._ensure_topic(kwargs)
            self._consumer = AIOKafkaConsumer(
                group_id=None, enable_auto_commit=False, auto_offset_reset="earliest", **kwargs)
            await self._consumer.start()
            self._consumer.assign([self._tp])
            self._consumer.pause(self._tp)  # no long poll ahead of the two offset requests below
            await self._consumer.seek_to_beginning(self._tp)
            end = (await self._consumer.end_offsets([self._tp]))[self._tp]
            self._consumer.resume(self._tp)
            # End offsets come from a second connection: the broker answers one connection's requests
            # in order, so on the reader's they would wait behind its long-polling fetch.
            self._offsets = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, **kwargs)
            await self._offsets.start()
            self._producer = AIOKafkaProducer(acks="all", enable_idempotence=True, **kwargs)
            await self._producer.start()
            # A restart of this object rebuilds its state from the topic like a new process would.
            self.state = RegistryState(self.settings.registry_default_compatibility)
            self._position, self._failure = 0, None
            self._reader = asyncio.create_task(self._read_forever(), name=f"registry-reader-{self.topic}")
            await self._wait_for(end, self.settings.registry_startup_timeout_s, "reading it at start")
        except KafkaError as exc:
            await self.stop()
            raise BrokerUnavailable(f"schema registry: Kafka at {self.settings.bootstrap_servers} "
                                    f"did not answer: {exc!r}") from exc
        except BaseException:
            await self.stop()
            raise
        log.info("schema store ready", topic=self.topic, records_end=end,
                 schemas=self.state.schema_count, subjects=len(self.state.subjects()))

    async def stop(self) -> None:
        """Stop following the topic and close the clients; safe to call twice."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            # The reader's own failure, if any, was already handed to `watch()`.
            await asyncio.gather(reader, return_exceptions=True)
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()
        for consumer in (self._offsets, self._consumer):
            if consumer is not None:
                await consumer.stop()
        self._offsets = self._consumer = None


    async def watch(self) -> None:
        """Return (or raise RegistryStoreError) only when following the topic stopped."""
        if self._reader is None:
            raise RegistryStoreError("schema store not started")
        await asyncio.shield(self._reader)

    async def _ensure_topic(self, kwargs: dict[str, Any]) -> None:
        admin = AIOKafkaAdminClient(**kwargs)
        await admin.start()
        try:
            described = (await admin.describe_topics([self.topic]))[0]
            if described["error_code"] != 0:
                plan = await topic_replication(self.settings, admin,
                                               factor=self.settings.registry_topic_replication)
                response = await admin.create_topics([NewTopic(
                    self.topic, num_partitions=1, replication_factor=plan.factor,
                    topic_configs={"cleanup.policy": "compact", **plan.topic_config()},
                )])
                for name, code, message in response.topic_errors:
                    if code not in (0, TOPIC_ALREADY_EXISTS):
                        raise RegistryStoreError(f"could not create topic {name}: {message} (code {code})")
                log.info("schemas topic created", topic=self.topic, replication=plan.factor,
                         min_insync_replicas=plan.min_insync)
                described = (await admin.describe_topics([self.topic]))[0]
            partitions = len(described["partitions"])
            if partitions > 1:
                raise ConfigError(f"topic {self.topic} has {partitions} partitions; "
                                  "the schema registry needs exactly one")
            policy = await self._cleanup_policy(admin)
            if policy != "compact":
                raise ConfigError(f"topic {self.topic} has cleanup.policy={policy}; the schema registry "
                                  "needs cleanup.policy=compact or schemas would expire")
        finally:
            await admin.close()

    async def _cleanup_policy(self, admin: AIOKafkaAdminClient) -> str | None:
        """The topic's cleanup.policy; a topic created a moment ago may not be described yet."""
        resource = ConfigResource(ConfigResourceType.TOPIC, self.topic, {"cleanup.policy": None})
        deadline = time.monotonic() + 10
        while True:
            answer = (await admin.describe_configs([resource]))[0].to_object()
            found = answer["resources"][0]
            policy = next((e["config_value"] for e in found["config_entries"]
                           if e["config_names"] == "cleanup.policy"), None)
            if (found["error_code"] == 0 and policy is not None) or time.monotonic() > deadline:
                return policy
            await asyncio.sleep(0.2)

    # -- following the topic ---------------------------------------------------------------

    async def _read_forever(self) -> None:
        consumer = self._consumer
        if consumer is None:
            raise RegistryStoreError("schema store not started")
        try:
            while True:
                batch = await consumer.getmany(self._tp, timeout_ms=500)
                for record in batch.get(self._tp, ()):
                    self._apply(record)
                position = await consumer.position(self._tp)
                async with self._progress:
                    self._position = position
                    self._progress.notify_all()
        except KafkaError as exc:
            failure = RegistryStoreError(f"reading topic {self.topic} failed: {exc!r}")
            async with self._progress:
                self._failure = failure
                self._progress.notify_all()
            raise failure from exc

    def _apply(self, record: ConsumerRecord[bytes, bytes]) -> None:
        try:
            self.state.apply(record.key, record.value)
        except DecodeError as exc:
            log.warning("unreadable schemas record skipped", topic=self.topic, offset=record.offset,
                        error=str(exc))
            if self._on_bad_record is not None:
                self._on_bad_record()

    async def _wait_for(self, offset: int, timeout_s: float, doing: str) -> None:
        """Wait until the reader has applied every record before `offset`."""
        try:
            async with asyncio.timeout(timeout_s), self._progress:
                await self._progress.wait_for(lambda: self._position >= offset or self._failure is not None)
        except TimeoutError:
            raise RegistryStoreError(
                f"topic {self.topic}: offset {offset} not read back within {timeout_s} s ({doing}); "
                f"the reader is at {self._position}") from None
        if self._failure is not None:
            raise self._failure

    async def _catch_up(self) -> None:
        """Apply whatever another instance wrote before deciding on ids and versions."""
        if self._offsets is None:
            raise RegistryStoreError("schema store not started")
        try:
            end = (await self._offsets.end_offsets([self._tp]))[self._tp]
        except KafkaError as exc:
            raise RegistryStoreError(f"topic {self.topic}: end offset unknown: {exc!r}") from exc
        await self._wait_for(end, self.settings.registry_write_timeout_s, "catching up before a write")

    async def _write(self, records: list[Record]) -> None:
        """Produce records, then wait until the reader has applied them."""
        if self._producer is None:
            raise RegistryStoreError("schema store not started")
        timeout_s = self.settings.registry_write_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                sent = [await self._producer.send(self.topic, key=key, value=value, partition=0)
                        for key, value in records]
                last = [await future for future in sent][-1]
        except TimeoutError:
            raise RegistryStoreError(
                f"topic {self.topic}: write not acknowledged within {timeout_s} s") from None
        except KafkaError as exc:
            raise RegistryStoreError(f"topic {self.topic}: write failed: {exc!r}") from exc
        await self._wait_for(last.offset + 1, timeout_s, "reading back a write")

    # -- reads -----------------------------------------------------------------------------

    def schema_of(self, entry: SubjectVersion) -> AvroSchema:
        schema = self.state.schema(entry.schema_id)
        if schema is None:  # the state keeps every schema some version holds
            raise RegistryStoreError(
                f"{entry.subject} version {entry.version}: schema {entry.schema_id} missing")
        return schema

    def get_version(self, subject: str, version: int | None, *, deleted: bool = False) -> SubjectVersion:
        """One version of a subject; None is the latest."""
        versions = self.state.versions(subject, deleted=deleted)
        if not versions:
            raise subject_not_found(subject)
        if version is None:
            return versions[-1]
        for entry in versions:
            if entry.version == version:
                return entry
        raise version_not_found(version)

    def lookup(self, subject: str, schema: AvroSchema, *, deleted: bool = False) -> SubjectVersion:
        """The latest version of a subject holding this schema."""
        versions = self.state.versions(subject, deleted=deleted)
        if not versions:
            raise subject_not_found(subject)
        schema_id = self.state.id_of(schema)
        matches = [entry for entry in versions if entry.schema_id == schema_id]
        if not matches:
            raise schema_not_found()
        return matches[-1]

    async def check(self, subject: str, schema: AvroSchema, version: int | None) -> CompatibilityResult:
        """Test a candidate against one version (None: the latest) under the subject's level."""
        target = self.get_version(subject, version)
        return await self._checker(self.state.level_for(subject), schema,
                                   {target.version: self.schema_of(target)})

    async def check_all(self, subject: str, schema: AvroSchema) -> CompatibilityResult:
        """Test a candidate as registering it would: the latest version, or all for *_TRANSITIVE."""
        level = self.state.level_for(subject)
        live = {entry.version: self.schema_of(entry) for entry in self.state.versions(subject)}
        if not level.transitive and live:
            live = {max(live): live[max(live)]}  # only the latest is checked: send no more
        return await self._checker(level, schema, live)

    # -- writes ----------------------------------------------------------------------------

    async def register(self, subject: str, schema: AvroSchema) -> int:
        """Add a schema to a subject (or find it there) and return its id.

        Raises:
            Refusal: 409 when the subject's compatibility level refuses it.
        """
        async with self._write_lock:
            await self._catch_up()
            known_id = self.state.id_of(schema)
            live = self.state.versions(subject)
            if known_id is not None and any(entry.schema_id == known_id for entry in live):
                return known_id
            result = await self.check_all(subject, schema)
            if not result.compatible:
                level = self.state.level_for(subject)
                raise Refusal(409, 409, (
                    f"Schema being registered is incompatible with an earlier schema for subject "
                    f"\"{subject}\" under compatibility level {level}, details: {list(result.messages)}"))
            schema_id = known_id if known_id is not None else self.state.max_id + 1
            stored = self.state.schema(schema_id) or schema  # an existing id keeps its first text
            entry = SubjectVersion(subject, self.state.next_version(subject), schema_id)
            self.state.expect(stored)  # parsed already: reading the record back need not parse again
            try:
                await self._write([schema_record(entry, stored)])
            finally:
                self.state.forget_expected(stored)
        log.info("schema registered", subject=subject, version=entry.version, schema_id=schema_id,
                 new_id=known_id is None)
        return schema_id

    async def delete_version(self, subject: str, version: int | None, *, permanent: bool) -> int:
        """Soft-delete a version, or hard-delete one already soft-deleted; returns its number."""
        async with self._write_lock:
            await self._catch_up()
            versions = self.state.versions(subject, deleted=True)
            if not versions:
                raise subject_not_found(subject)
            if version is None:
                candidates = versions if permanent else [e for e in versions if not e.deleted]
                if not candidates:
                    raise subject_not_found(subject)
                entry = candidates[-1]
            else:
                found = [e for e in versions if e.version == version]
                if not found:
                    raise version_not_found(version)
                entry = found[0]
            if permanent:
                if not entry.deleted:
                    raise Refusal(404, 40407, f"Subject '{subject}' Version {entry.version} was not deleted "
                                              "first before being permanently deleted")
                await self._write([schema_tombstone(subject, entry.version)])
            else:
                if entry.deleted:
                    raise Refusal(404, 40406, f"Subject '{subject}' Version {entry.version} was soft "
                                              "deleted. Set permanent=true to delete permanently")
                await self._write([schema_record(replace(entry, deleted=True), self.schema_of(entry))])
        log.info("version deleted", subject=subject, version=entry.version, permanent=permanent)
        return entry.version

    async def delete_subject(self, subject: str, *, permanent: bool) -> list[int]:
        """Soft-delete every live version (and the subject's level), or hard-delete a soft-deleted subject."""
        async with self._write_lock:
            await self._catch_up()
            versions = self.state.versions(subject, deleted=True)
            if not versions:
                raise subject_not_found(subject)
            live = [entry for entry in versions if not entry.deleted]
            records: list[Record]
            if permanent:
                if live:
                    raise Refusal(404, 40405, f"Subject '{subject}' was not deleted first before being "
                                              "permanently deleted")
                records = [schema_tombstone(subject, entry.version) for entry in versions]
                deleted = [entry.version for entry in versions]
            else:
                if not live:
                    raise Refusal(404, 40404, f"Subject '{subject}' was soft deleted. Set permanent=true to "
                                              "delete permanently")
                records = [schema_record(replace(entry, deleted=True), self.schema_of(entry))
                           for entry in live]
                deleted = [entry.version for entry in live]
            if self.state.subject_level(subject) is not None:
                records.append(config_record(subject, None))
            await self._write(records)
        log.info("subject deleted", subject=subject, versions=deleted, permanent=permanent)
        return deleted

    async def set_level(self, subject: str | None, level: CompatibilityLevel) -> None:
        """Set the compatibility level of one subject, or the global one (subject None)."""
        async with self._write_lock:
            await self._catch_up()
            await self._write([config_record(subject, level)])
        log.info("compatibility level set", subject=subject, level=level.value)

    async def delete_level(self, subject: str | None) -> CompatibilityLevel:
        """Drop a subject's level (back to the global one) or reset the global one; returns the old level."""
        async with self._write_lock:
            await self._catch_up()
            if subject is None:
                previous = self.state.effective_global_level()
            else:
                found = self.state.subject_level(subject)
                if found is None:
                    raise subject_not_found(subject)
                previous = found
            await self._write([config_record(subject, None)])
        log.info("compatibility level removed", subject=subject, previous=previous.value)
        return previous
