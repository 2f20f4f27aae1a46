"""Bring a secured bus's principals in line: a credential and exactly its ACLs for each service
and each active agency in the directory (what `make up` does after creating the topics)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from liaison.core.settings import KafkaSettings
from liaison.security.acls import SERVICES, agency_grants, service_grants
from liaison.security.admin import SecurityAdmin
from liaison.security.credentials import Credential, CredentialFiles, Endpoints, new_password


@dataclass(frozen=True)
class Secured:
    credentials_issued: list[str]
    acls_added: int
    acls_removed: int


async def secure_principals(settings: KafkaSettings, files: CredentialFiles, endpoints: Endpoints,
                            agencies: Iterable[str], services: Iterable[str] = SERVICES) -> Secured:
    """Issue credentials to principals without a working one here, and set everyone's ACLs.

    A principal whose credential file is missing gets a new password (the broker's copy is
    replaced), so the files and the broker never disagree after this has run.
    """
    admin = SecurityAdmin(settings)
    services, agencies = list(services), list(agencies)
    users = services + agencies
    on_broker = await admin.users_with_credentials(users)
    issued = [Credential(u, new_password()) for u in users if u not in on_broker or files.read(u) is None]
    await admin.set_credentials(issued)
    for credential in issued:
        files.write(credential, endpoints)
    added = removed = 0
    tables = [(s, service_grants(settings.topics, s)) for s in services]
    tables += [(a, agency_grants(settings.topics, a)) for a in agencies]
    for user, grants in tables:
        plus, minus = await admin.set_grants(user, grants)
        added, removed = added + len(plus), removed + len(minus)
    return Secured([c.username for c in issued], added, removed)
