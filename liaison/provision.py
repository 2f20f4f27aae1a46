"""Bring a bus's topics, directory and principals in line with a directory file and a policy: what
`liaison up` does on the local cluster, and `liaison provision` on any existing one.

Idempotent: a second run changes nothing and says so. It never lowers what is there: an agency
onboarded with `liaison agency add` and missing from the file keeps its entry, and an existing
principal keeps its password (only one without a credential file here gets a new one).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from liaison.core.settings import KafkaSettings
from liaison.directory import Directory
from liaison.directory_feed import publish_directory
from liaison.kafka_admin import ConfigChange, reconcile_topics
from liaison.local.paths import REPO_ROOT
from liaison.security.bus import Secured, secure_principals
from liaison.security.credentials import CredentialFiles, Endpoints
from liaison.table import CompactedTable

DEFAULT_DIRECTORY = REPO_ROOT / "deploy" / "directory.yaml"


@dataclass(frozen=True)
class Provisioned:
    topics_created: list[str]
    directory_changes: int
    configs_changed: list[ConfigChange] = field(default_factory=list)
    principals: Secured | None = None  # None: the cluster is not secured

    def lines(self) -> list[str]:
        """What changed, one line each, as `liaison provision` prints it."""
        out = [f"topic created: {name}" for name in self.topics_created]
        out += [f"topic config: {change}" for change in self.configs_changed]
        if self.directory_changes:
            out.append(f"directory entries written: {self.directory_changes}")
        if (p := self.principals) is not None:
            out += [f"credential issued: {user}" for user in p.credentials_issued]
            if p.acls_added or p.acls_removed:
                out.append(f"ACLs: {p.acls_added} added, {p.acls_removed} removed")
            out += [f"default quota set: {user}" for user in p.quotas_set]
        return out


async def provision(settings: KafkaSettings, directory_file: Path = DEFAULT_DIRECTORY, *,
                    partitions: int = 3, audit_retention_ms: int = -1,
                    credentials: CredentialFiles | None = None) -> Provisioned:
    """Bus and agency topics as settings and policy say (existing ones' configs too), the
    directory's changed entries, then, with `credentials` (a secured cluster), every active
    agency's and service's principal: credential, exactly its ACLs, and a quota."""
    directory = Directory.from_file(directory_file)
    names = settings.topics
    specs = names.bus_topics(partitions=partitions, audit_retention_ms=audit_retention_ms)
    for code in [*directory.agencies, *directory.officers]:  # an officer has an agency's set of topics
        specs += names.agency_topic_specs(code)
    topics = await reconcile_topics(settings, specs)
    async with CompactedTable(settings, names.directory) as current:
        entries = dict(current.items)
        changes = await publish_directory(settings, directory, current=entries)
    secured = None
    if credentials is not None:
        # what the topic holds now: its entries, the file's written over them (nothing is pruned)
        published = Directory.from_entries(entries | dict(directory.entries()))
        now = int(time.time() * 1000)
        active = sorted([*(code for code, agency in published.agencies.items() if agency.active),
                         *(code for code, officer in published.officers.items() if officer.in_force(now))])
        endpoints = Endpoints(settings.bootstrap_servers, settings.registry_url,
                              Path(settings.ssl_cafile) if settings.ssl_cafile else None)
        secured = await secure_principals(settings, credentials, endpoints, active)
    return Provisioned(topics.created, changes, topics.changed, secured)
