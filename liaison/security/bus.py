"""Bring a secured bus's principals in line: a credential and exactly its ACLs for each service
and each active agency in the directory, and each agency's quotas (what `make up` does after
creating the topics).

Every user is named by `acls.username`: on a bus with a prefix, `a.liaison-router` and `a.FR-PN`,
so buses sharing a cluster share no principal; credential files are named after the user too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from liaison.core.settings import KafkaSettings
from liaison.security.acls import SERVICES, agency_grants, check_bus_prefix, service_grants, username
from liaison.security.admin import SecurityAdmin
from liaison.security.credentials import Credential, CredentialFiles, Endpoints, new_password
from liaison.security.quotas import Quota, QuotaAdmin, quota_defaults


@dataclass(frozen=True)
class Secured:
    credentials_issued: list[str]
    acls_added: int
    acls_removed: int
    quotas_set: list[str] = field(default_factory=list)  # users that got a default quota now


async def secure_principals(settings: KafkaSettings, files: CredentialFiles, endpoints: Endpoints,
                            agencies: Iterable[str], services: Iterable[str] = SERVICES, *,
                            agency_quotas: Quota | None = None) -> Secured:
    """Issue credentials to principals without a working one here, and set everyone's ACLs.

    `agencies` are codes and `services` unprefixed service names; both become users of this bus.
    A principal whose credential file is missing gets a new password (the broker's copy is
    replaced), so the files and the broker never disagree after this has run. An agency lacking a
    quota gets the default (`agency_quotas`, else `LIAISON_AGENCY_*`); services are not limited.
    """
    topics = settings.topics
    check_bus_prefix(topics)
    defaults = agency_quotas or quota_defaults()
    admin = SecurityAdmin(settings)
    tables = [(username(topics, s), service_grants(topics, s)) for s in services]
    agency_users = [(username(topics, a), agency_grants(topics, a)) for a in agencies]
    tables += agency_users
    users = [user for user, _ in tables]
    on_broker = await admin.users_with_credentials(users)
    issued = [Credential(u, new_password()) for u in users if u not in on_broker or files.read(u) is None]
    await admin.set_credentials(issued)
    for credential in issued:
        files.write(credential, endpoints)
    changed = await admin.set_grants_many(dict(tables))
    added = sum(len(plus) for plus, _ in changed.values())
    removed = sum(len(minus) for _, minus in changed.values())
    async with QuotaAdmin(settings) as quotas:
        ensured = await quotas.ensure([user for user, _ in agency_users], defaults)
    return Secured([c.username for c in issued], added, removed,
                   sorted(user for user, (_, now) in ensured.items() if not now.empty))
