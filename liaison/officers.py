"""Liaison officers posted abroad (Council Decision 2003/170/JHA): post, list and revoke.

Posting creates the officer's own topics (outboxes, inboxes, receipts), on a secured bus its own
SCRAM credential and exactly an agency's ACLs on those topics, then publishes its `officer/<CODE>`
directory entry last, so the router copies nothing to it before its topics exist. Revoking
writes the entry REVOKED first (the router stops at once), then deletes its ACLs and credential.
An expired delegation is ended in the broker by the delegations service
(`services/delegations`); the router stops at its end date by itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from liaison.core.settings import KafkaSettings
from liaison.directory import ISO_COUNTRIES, Officer, check_agency_code
from liaison.directory_feed import publish_entries
from liaison.errors import ConfigError
from liaison.kafka_admin import ensure_topics
from liaison.onboarding import (
    AccessControl,
    NoAccessControl,
    current_directory,
    existing_topics,
    read_entries,
)
from liaison.sdk.client import kafka_faults

DAY_MS = 86_400_000


def officer_key(code: str) -> str:
    return f"officer/{code}"


@dataclass(frozen=True)
class OfficerView:
    officer: Officer
    in_force: bool
    topics: dict[str, bool]  # topic name -> exists
    access: tuple[str, ...] = ()  # what changed in Kafka access, for the operator

    def to_dict(self) -> dict[str, Any]:
        return {**self.officer.to_entry(), "in_force": self.in_force, "topics": self.topics,
                "access": list(self.access)}


def plan_post(entries: dict[str, Any], agency: str, post_code: str, *, post: str, cases: Iterable[str],
              countries: Iterable[str], starts_at: int, ends_at: int) -> Officer:
    """The officer a post creates; its agency must be an active agency of the directory."""
    agency = check_agency_code(agency.strip().upper(), "agency")
    directory = current_directory(entries)
    found = directory.agency(agency)
    if found is None:
        raise ConfigError(f"{agency} is not in the directory (`liaison agency add {agency}` first)")
    if not found.active:
        raise ConfigError(f"{agency} is SUSPENDED: it cannot post a liaison officer")
    code = f"{agency}-{post_code.strip().upper()}"
    wanted = frozenset(c.strip().upper() for c in countries)
    if unknown := sorted(c for c in wanted if c not in ISO_COUNTRIES):
        raise ConfigError(f"--country {', '.join(unknown)}: not an ISO 3166 alpha-2 country")
    existing = directory.officers.get(code)
    if existing is not None and existing.in_force(int(time.time() * 1000)):
        raise ConfigError(f"{code} is already posted until its delegation ends; `liaison officer revoke "
                          f"{code}` first to post it again")
    return Officer(code=code, agency=agency, post=post.strip(), cases=frozenset(c.strip() for c in cases),
                   countries=wanted, starts_at=starts_at, ends_at=ends_at)


async def post_officer(settings: KafkaSettings, agency: str, post_code: str, *, post: str = "",
                       cases: Iterable[str] = (), countries: Iterable[str] = (), starts_at: int | None = None,
                       ends_at: int, access: AccessControl | None = None) -> OfficerView:
    """Topics, credential and ACLs of a new officer, then its directory entry."""
    now = int(time.time() * 1000)
    officer = plan_post(await read_entries(settings), agency, post_code, post=post, cases=cases,
                        countries=countries, starts_at=now if starts_at is None else starts_at,
                        ends_at=ends_at)
    topics = settings.topics
    async with kafka_faults(settings, f"creating the topics of {officer.code}"):
        await ensure_topics(settings, topics.agency_topic_specs(officer.code))
    granted = await (access or NoAccessControl()).grant(settings, officer.code)
    async with kafka_faults(settings, "writing the directory"):
        await publish_entries(settings, {officer_key(officer.code): officer.to_entry()})
    present = await existing_topics(settings)
    return OfficerView(officer, officer.in_force(now), {t: t in present for t in topics.agency_topics(
        officer.code)}, tuple(granted))


async def revoke_officer(settings: KafkaSettings, code: str, *,
                         access: AccessControl | None = None) -> OfficerView:
    """The delegation ends now: REVOKED in the directory first, then no broker access."""
    code = code.strip().upper()
    directory = current_directory(await read_entries(settings))
    officer = directory.officers.get(code)
    if officer is None:
        posted = ", ".join(sorted(directory.officers)) or "none"
        raise ConfigError(f"{code} is not a liaison officer in the directory (posted: {posted})")
    revoked = replace(officer, status="REVOKED")
    if officer.status != "REVOKED":
        async with kafka_faults(settings, "writing the directory"):
            await publish_entries(settings, {officer_key(code): revoked.to_entry()})
    done = await (access or NoAccessControl()).revoke(settings, code)
    return OfficerView(revoked, False, {}, tuple(done))


async def list_officers(settings: KafkaSettings, agency: str | None = None) -> list[OfficerView]:
    """Every officer in the directory (or one agency's), with whether it is in force now."""
    directory = current_directory(await read_entries(settings))
    present = await existing_topics(settings)
    now = int(time.time() * 1000)
    return [OfficerView(o, o.in_force(now), {t: t in present for t in settings.topics.agency_topics(o.code)})
            for _, o in sorted(directory.officers.items()) if agency is None or o.agency == agency]
