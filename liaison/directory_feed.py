"""The directory as every service sees it: the compacted `bus.directory` topic, followed live.

Onboarding and `deploy/directory.yaml` publish entries (`agency/FR-PN`, `group/EU`, ...); each
service rebuilds its Directory snapshot whenever an entry changes, so no restart is needed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer

from liaison.core.settings import KafkaSettings
from liaison.directory import Directory
from liaison.errors import ConfigError
from liaison.table import CompactedTable, json_bytes

log = structlog.get_logger(__name__)


async def publish_entries(settings: KafkaSettings, entries: dict[str, dict[str, Any] | None]) -> None:
    """Write directory entries (None deletes one) and wait for the broker's acknowledgement."""
    producer = AIOKafkaProducer(**settings.kafka_kwargs(), enable_idempotence=True, acks="all")
    await producer.start()
    try:
        for key, value in entries.items():
            await producer.send(settings.topics.directory, None if value is None else json_bytes(value),
                                key=key.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def publish_directory(settings: KafkaSettings, directory: Directory, *,
                            current: dict[str, Any] | None = None, prune: bool = False) -> int:
    """Write the entries of `directory` that differ from `current`. With `prune`, also delete the
    entries it lacks; without, entries added by onboarding (`liaison agency add`) are kept."""
    wanted = dict(directory.entries())
    changes: dict[str, dict[str, Any] | None] = {k: v for k, v in wanted.items()
                                                  if (current or {}).get(k) != v}
    if prune:
        changes.update({k: None for k in (current or {}) if k not in wanted})
    if changes:
        await publish_entries(settings, changes)
    return len(changes)


class DirectoryFeed:
    """A live Directory snapshot rebuilt from `bus.directory` on every change."""

    def __init__(self, settings: KafkaSettings, *, on_change: Callable[[], None] | None = None) -> None:
        """`on_change`: called after each rebuild (a service that waits on the directory wakes)."""
        self._settings = settings
        self._on_change = on_change
        self.current = Directory.from_entries({})
        self.table = CompactedTable(settings, settings.topics.directory, on_change=self._rebuild)

    def _rebuild(self, changes: dict[str, Any]) -> None:
        try:
            self.current = Directory.from_entries(self.table.items)
        except ConfigError as exc:  # one bad entry must not stop the bus: keep the last good view
            log.error("directory entry refused; keeping the previous directory",  # noqa: TRY400  # named fault
                      error=str(exc), changed=sorted(changes))
            return
        log.info("directory updated", changed=sorted(changes), agencies=len(self.current.agencies))
        if self._on_change is not None:
            self._on_change()

    async def start(self, *, publish_file: Path | None = None) -> None:
        await self.table.start()
        if publish_file is not None:
            changed = await publish_directory(self._settings, Directory.from_file(publish_file),
                                              current=dict(self.table.items))
            if changed:
                await self.table.wait_caught_up()
        self.current = Directory.from_entries(self.table.items)

    async def stop(self) -> None:
        await self.table.stop()
