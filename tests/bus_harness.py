"""A whole bus for integration tests: registry, directory, router, on the session's real broker.

Every bus gets its own topic prefix, so tests never see each other's topics or state.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRecord

from liaison.codec import Codec
from liaison.contract import ready_codec
from liaison.core.runner import ShutdownSignal
from liaison.core.settings import KafkaSettings
from liaison.directory import Directory
from liaison.directory_feed import publish_directory
from liaison.kafka_admin import ensure_topics
from liaison.local.paths import REPO_ROOT
from liaison.registry_client import RegistryClient
from liaison.topics import Topics
from services.registry.app import RegistryServer
from services.registry.settings import RegistrySettings
from services.router.app import Router
from services.router.settings import RouterSettings
from tests.kafka_helpers import read_until

DIRECTORY_FILE = REPO_ROOT / "deploy" / "directory.yaml"


@dataclass
class Bus:
    settings: KafkaSettings
    codec: Codec
    directory: Directory
    routers: list[tuple[Router, asyncio.Task[None], ShutdownSignal]] = field(default_factory=list)
    _producer: AIOKafkaProducer | None = None

    @property
    def topics(self) -> Topics:
        return self.settings.topics

    async def send(self, message_type: str, record: dict[str, Any], *, outbox_of: str | None = None) -> None:
        """Write a message to its originator's outbox (or another agency's, to test spoofing)."""
        env = record["envelope"]
        topic = self.topics.outbox(message_type, outbox_of or env["originator"])
        await self.send_raw(topic, self.codec.encode(message_type, record),
                            key=str(env["case_id"] or env["message_id"]).encode())

    async def send_raw(self, topic: str, value: bytes, *, key: bytes | None = None) -> None:
        assert self._producer is not None
        await self._producer.send_and_wait(topic, value, key=key)

    async def read(self, topic: str, count: int, *, timeout_s: float = 30.0,
                   settle_s: float = 0.0) -> list[tuple[str, dict[str, Any]]]:
        records = await read_until(self.settings.bootstrap_servers, topic, count=count,
                                   timeout_s=timeout_s, settle_s=settle_s)
        return [self.codec.decode(r.value) for r in records]

    async def read_raw(self, topic: str, count: int, *, timeout_s: float = 30.0,
                       settle_s: float = 0.0) -> list[ConsumerRecord[bytes, bytes]]:
        return await read_until(self.settings.bootstrap_servers, topic, count=count,
                                timeout_s=timeout_s, settle_s=settle_s)

    def router_settings(self, **overrides: Any) -> RouterSettings:
        base = self.settings.model_dump()
        base.update({"group_id": f"{self.settings.topic_prefix}router",
                     "transactional_prefix": f"{self.settings.topic_prefix}router",
                     "session_timeout_ms": 6000, "metrics_port": 0})
        base.update(overrides)
        return RouterSettings(**base)

    async def start_router(self, **overrides: Any) -> Router:
        router = Router(self.router_settings(**overrides))
        await router.start()
        shutdown = ShutdownSignal()
        task = asyncio.create_task(router.run(shutdown))
        self.routers.append((router, task, shutdown))
        return router

    async def stop_routers(self) -> None:
        for router, task, shutdown in self.routers:
            shutdown.trigger("test finished")
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 30)
            await router.stop()
        self.routers.clear()


@contextlib.asynccontextmanager
async def running_bus(bootstrap: str, *, directory_file: Path = DIRECTORY_FILE,
                      router: bool = True, partitions: int = 1) -> AsyncIterator[Bus]:
    """Registry + directory + agency topics + (optionally) one router, all under a fresh prefix."""
    prefix = f"t{uuid.uuid4().hex[:8]}."
    registry = RegistryServer(RegistrySettings(
        bootstrap_servers=bootstrap, registry_port=0, registry_topic=f"{prefix}_schemas",
        topic_prefix=prefix))
    async with registry:
        settings = KafkaSettings(bootstrap_servers=bootstrap, registry_url=registry.url,
                                 topic_prefix=prefix)
        directory = Directory.from_file(directory_file)
        specs = settings.topics.bus_topics(partitions=partitions)
        for agency in directory.agencies:
            specs += settings.topics.agency_topic_specs(agency, partitions=partitions)
        await ensure_topics(settings, specs)
        await publish_directory(settings, directory)
        async with RegistryClient(registry.url) as client:
            codec = await ready_codec(client)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, linger_ms=2)
        await producer.start()
        bus = Bus(settings, codec, directory, _producer=producer)
        try:
            if router:
                await bus.start_router()
            yield bus
        finally:
            await bus.stop_routers()
            await producer.stop()
