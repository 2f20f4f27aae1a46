"""Bring a bus's topics and directory in line with a directory file (what `make up` does first)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from liaison.core.settings import KafkaSettings
from liaison.directory import Directory
from liaison.directory_feed import publish_directory
from liaison.kafka_admin import ensure_topics
from liaison.local.paths import REPO_ROOT
from liaison.table import CompactedTable

DEFAULT_DIRECTORY = REPO_ROOT / "deploy" / "directory.yaml"


@dataclass(frozen=True)
class Provisioned:
    topics_created: list[str]
    directory_changes: int


async def provision(settings: KafkaSettings, directory_file: Path = DEFAULT_DIRECTORY, *,
                    partitions: int = 3, audit_retention_ms: int = -1) -> Provisioned:
    """Create missing bus and agency topics and publish the directory's changed entries."""
    directory = Directory.from_file(directory_file)
    names = settings.topics
    specs = names.bus_topics(partitions=partitions, audit_retention_ms=audit_retention_ms)
    for agency in directory.agencies:
        specs += names.agency_topic_specs(agency)
    created = await ensure_topics(settings, specs)
    async with CompactedTable(settings, names.directory) as current:
        changes = await publish_directory(settings, directory, current=dict(current.items))
    return Provisioned(created, changes)
