"""Onboarding: an agency's topics and its directory entry, created, changed and removed on purpose.

The directory lives in the compacted `bus.directory` topic (key `agency/<CODE>`, value the
`Agency.to_entry()` JSON, a tombstone to delete). Every operation reads the current entries, works
out the change as a pure function (unit-tested without Kafka), and writes only what differs, so
running it twice changes nothing the second time.

On a secured cluster each agency is also a Kafka principal, named by `liaison.security.acls.username`
(the bus's prefix, then its code): `KafkaAccessControl` gives it a SCRAM credential, exactly the
ACLs of `liaison.security.acls.agency_grants` and client quotas (`liaison.security.quotas`);
suspending takes credential and ACLs away and keeps the quotas for its return, removing takes all
three, resuming issues a new credential. On a plain-text cluster there is nothing to authenticate
and `NoAccessControl` says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml
from aiokafka.admin import AIOKafkaAdminClient

from liaison.core.files import read_config
from liaison.core.settings import KafkaSettings
from liaison.directory import Agency, AgencyStatus, Directory, check_agency_code
from liaison.directory import _agency as parse_agency_entry
from liaison.directory_feed import publish_entries
from liaison.errors import ConfigError
from liaison.kafka_admin import ensure_topics
from liaison.sdk.client import TopicMissing, kafka_faults
from liaison.security.acls import agency_grants, check_bus_prefix, username
from liaison.security.admin import SecurityAdmin
from liaison.security.credentials import Credential, CredentialFiles, Endpoints, new_password
from liaison.security.quotas import Quota, QuotaAdmin, quota_defaults
from liaison.table import CompactedTable

Entries = Mapping[str, Any]
DirectoryChange = Literal["added", "updated", "suspended", "resumed", "removed", "unchanged"]


def agency_key(code: str) -> str:
    """The `bus.directory` key of an agency's entry, as `Directory.entries()` names it."""
    return f"agency/{code}"


# -- access control: Kafka principals, ACLs and quotas ---------------------------------------------
@dataclass(frozen=True)
class QuotaView:
    """An agency user's client quotas, as the broker holds them after a change (if any)."""

    code: str
    user: str
    quota: Quota
    changed: tuple[str, ...] = ()  # Kafka's names of the quotas set now

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "user": self.user, "quotas": self.quota.to_dict(),
                "changed": list(self.changed)}


class AccessControl(Protocol):
    """Gives an agency's principal write access to its outboxes and read access to its inboxes."""

    async def grant(self, settings: KafkaSettings, code: str) -> list[str]:
        """Create or confirm the principal, ACLs and quotas; return what was done, one line each."""
        ...

    async def grant_many(self, settings: KafkaSettings, codes: Sequence[str]) -> dict[str, list[str]]:
        """`grant` for every agency of `codes` in a few batched admin requests; lines per code."""
        ...

    async def revoke(self, settings: KafkaSettings, code: str) -> list[str]:
        """Remove the agency's credential and ACLs (topics and quotas stay); return what was done."""
        ...

    async def forget(self, settings: KafkaSettings, code: str) -> list[str]:
        """Revoke, and delete the agency's quotas too: it is leaving the bus."""
        ...

    async def rotate(self, settings: KafkaSettings, code: str) -> list[str]:
        """Replace the agency's password; the old one stops working for new connections."""
        ...

    async def quota(self, settings: KafkaSettings, code: str, changes: Quota) -> QuotaView | None:
        """Apply the quotas `changes` sets (none: only read); None when users have no quotas here."""
        ...


class NoAccessControl:
    """A plain-text cluster: nobody authenticates, so there is no principal to give ACLs to."""

    NOTE = ("the cluster is not secured (LIAISON_SECURITY_PROTOCOL={protocol}, no SASL login): no credential "
            "or ACLs were created, anyone who reaches the broker may read and write these topics at any rate")

    async def grant(self, settings: KafkaSettings, code: str) -> list[str]:
        return (await self.grant_many(settings, [code]))[code]

    async def grant_many(self, settings: KafkaSettings, codes: Sequence[str]) -> dict[str, list[str]]:
        return {code: [self.NOTE.format(protocol=settings.security_protocol)] for code in codes}

    async def revoke(self, settings: KafkaSettings, code: str) -> list[str]:
        return []  # adding it said once that the cluster is not secured

    async def forget(self, settings: KafkaSettings, code: str) -> list[str]:
        return []

    async def rotate(self, settings: KafkaSettings, code: str) -> list[str]:
        raise ConfigError("the cluster is not secured (LIAISON_SECURITY_PROTOCOL=PLAINTEXT): "
                          "there is no credential to rotate")

    async def quota(self, settings: KafkaSettings, code: str, changes: Quota) -> QuotaView | None:
        return None  # every client is the same anonymous user: there is no agency to limit


class KafkaAccessControl:
    """SCRAM credential, exactly the agency's ACLs and its quotas, set through the admin's connection.

    A new password goes to a credential file of mode 0600 in `files`, or, without `files`, into
    the returned lines once (the caller shows it and keeps it nowhere). It is never logged.
    Quotas an agency lacks get `quota_defaults` (by default from `LIAISON_AGENCY_*`); quotas an
    operator set for it are kept.
    """

    def __init__(self, files: CredentialFiles | None, *, quota_defaults: Quota | None = None) -> None:
        self.files = files
        self.quota_defaults = quota_defaults

    def _deliver(self, settings: KafkaSettings, credential: Credential) -> str:
        if self.files is None:
            return (f"password of {credential.username}: {credential.password.get_secret_value()} "
                    "(shown once: store it now)")
        endpoints = Endpoints(settings.bootstrap_servers, settings.registry_url,
                              Path(settings.ssl_cafile) if settings.ssl_cafile else None)
        path = self.files.write(credential, endpoints)
        return f"credential of {credential.username} written to {path} (mode 0600)"

    async def _new_credential(self, settings: KafkaSettings, admin: SecurityAdmin, user: str) -> str:
        credential = Credential(user, new_password())
        await admin.set_credentials([credential])
        return self._deliver(settings, credential)

    async def grant(self, settings: KafkaSettings, code: str) -> list[str]:
        return (await self.grant_many(settings, [code]))[code]

    async def grant_many(self, settings: KafkaSettings, codes: Sequence[str]) -> dict[str, list[str]]:
        """ACLs, then credentials for users without one, then default quotas: each a batch for all."""
        check_bus_prefix(settings.topics)
        users = {code: username(settings.topics, code) for code in codes}
        defaults = self.quota_defaults or quota_defaults()
        admin = SecurityAdmin(settings)
        who = codes[0] if len(codes) == 1 else f"{len(codes)} agencies"
        async with kafka_faults(settings, f"granting {who} their ACLs"):
            acls = await admin.set_grants_many({users[c]: agency_grants(settings.topics, c) for c in codes})
            have = await admin.users_with_credentials(users.values())
            issued = {c: Credential(users[c], new_password()) for c in codes if users[c] not in have}
            await admin.set_credentials(issued.values())
            async with QuotaAdmin(settings) as quotas:
                ensured = await quotas.ensure(users.values(), defaults)
        lines: dict[str, list[str]] = {}
        for code in codes:
            user = users[code]
            added, removed = acls[user]
            if code in issued:
                credential = f"SCRAM credential created; {self._deliver(settings, issued[code])}"
            else:
                credential = f"SCRAM credential of {user} kept (`liaison agency rotate {code}` replaces it)"
            now, added_quotas = ensured[user]
            if added_quotas.empty:
                how = f"kept: `liaison agency quota {code}` changes them"
            elif added_quotas == now:
                how = "defaults set"
            else:
                how = f"defaults set for {', '.join(added_quotas.values())}, the others kept"
            lines[code] = [f"ACLs of User:{user}: {len(added)} added, {len(removed)} removed", credential,
                           f"quotas of {user}: {now.describe()} ({how})"]
        return lines

    async def revoke(self, settings: KafkaSettings, code: str) -> list[str]:
        check_bus_prefix(settings.topics)
        user = username(settings.topics, code)
        admin = SecurityAdmin(settings)
        async with kafka_faults(settings, f"revoking the access of {code}"):
            acls = await admin.revoke_all(user)
            had = await admin.delete_credential(user)
        if self.files is not None:
            self.files.remove(user)
        return [f"{acls} ACLs of User:{user} deleted",
                f"SCRAM credential of {user} {'deleted' if had else 'was already absent'}"]

    async def forget(self, settings: KafkaSettings, code: str) -> list[str]:
        lines = await self.revoke(settings, code)
        user = username(settings.topics, code)
        async with kafka_faults(settings, f"deleting the quotas of {code}"), QuotaAdmin(settings) as quotas:
            had = await quotas.delete(user)
        return [*lines, f"quotas of {user} {'deleted' if not had.empty else 'were already absent'}"]

    async def rotate(self, settings: KafkaSettings, code: str) -> list[str]:
        check_bus_prefix(settings.topics)
        user = username(settings.topics, code)
        admin = SecurityAdmin(settings)
        async with kafka_faults(settings, f"rotating the credential of {code}"):
            if user not in await admin.users_with_credentials([user]):
                raise ConfigError(f"{code} has no credential to rotate (suspended or never onboarded on "
                                  f"this cluster): `liaison agency resume {code}` issues one")
            return ["password replaced; " + await self._new_credential(settings, admin, user)]

    async def quota(self, settings: KafkaSettings, code: str, changes: Quota) -> QuotaView:
        check_bus_prefix(settings.topics)
        user = username(settings.topics, code)
        async with kafka_faults(settings, f"the quotas of {code}"), QuotaAdmin(settings) as quotas:
            now = await quotas.describe(user)
            if changes.empty:
                return QuotaView(code, user, now)
            await quotas.apply(user, changes)
        # The broker that took the change may show it a moment later: report what was set.
        return QuotaView(code, user, now.merged(changes), tuple(changes.values()))


def access_control(settings: KafkaSettings, files: CredentialFiles | None, *,
                   quota_defaults: Quota | None = None) -> AccessControl:
    """What the cluster behind `settings` needs: credentials, ACLs and quotas only when it authenticates."""
    if settings.security_protocol.startswith("SASL"):
        check_bus_prefix(settings.topics)
        return KafkaAccessControl(files, quota_defaults=quota_defaults)
    return NoAccessControl()


# -- the pure part -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """What one operation writes to the directory (nothing when `entry` is unchanged)."""

    code: str
    change: DirectoryChange
    entry: dict[str, Any] | None  # the value to write; None for a tombstone
    notes: tuple[str, ...] = ()
    changed_fields: tuple[str, ...] = ()

    @property
    def writes(self) -> bool:
        return self.change != "unchanged"


def current_directory(entries: Entries) -> Directory:
    return Directory.from_entries(entries)


def plan_add(entries: Entries | Directory, code: str, *, name: str, country: str, groups: Iterable[str] = (),
             clearances: Iterable[str] = (), hub: bool | None = None) -> Plan:
    """The entry of a new or changed agency; status and hub flag are kept from an existing entry.

    `entries` may be the Directory they make, when many agencies are planned against one read.
    """
    code = check_agency_code(code.strip().upper(), "agency")
    directory = entries if isinstance(entries, Directory) else current_directory(entries)
    wanted_groups = frozenset(g.strip().upper() for g in groups)
    standing = sorted(n for n, g in directory.groups.items() if g.kind == "STANDING")
    for group in sorted(wanted_groups):
        found = directory.group(group)
        if found is None or found.kind != "STANDING":
            why = "is a CASE group (its members are listed in the group itself)" if found is not None \
                else "is not a group in the directory"
            raise ConfigError(f"--group {group} {why}; standing groups: {', '.join(standing) or 'none'}")
    if not name.strip():
        raise ConfigError("--name must not be empty")
    existing = directory.agency(code)
    agency = Agency(code=code, name=name.strip(), country=country.strip().upper(), groups=wanted_groups,
                    hub=existing.hub if hub is None and existing else bool(hub),
                    status=existing.status if existing else "ACTIVE",
                    clearances=frozenset(c.strip().upper() for c in clearances))
    entry = agency.to_entry()
    notes = []
    if agency.status == "SUSPENDED":
        notes.append(f"{code} is SUSPENDED: `liaison agency resume {code}` lets it send and receive")
    if existing is None:
        return Plan(code, "added", entry, tuple(notes))
    before = existing.to_entry()
    changed = tuple(k for k in entry if entry[k] != before.get(k))
    return Plan(code, "updated" if changed else "unchanged", entry, tuple(notes), changed)


def plan_status(entries: Entries, code: str, status: AgencyStatus) -> Plan:
    """Suspend or resume an agency in the directory."""
    code = check_agency_code(code.strip().upper(), "agency")
    existing = _existing(entries, code)
    if existing.status == status:
        return Plan(code, "unchanged", existing.to_entry(), (f"{code} is already {status}",))
    change: DirectoryChange = "suspended" if status == "SUSPENDED" else "resumed"
    return Plan(code, change, replace(existing, status=status).to_entry(), (), ("status",))


def plan_remove(entries: Entries, code: str) -> Plan:
    """A tombstone for the agency's entry; what still names it is reported, not changed."""
    code = check_agency_code(code.strip().upper(), "agency")
    directory = current_directory(entries)
    if directory.agency(code) is None:
        return Plan(code, "unchanged", None, (f"{code} is not in the directory",))
    notes = [f"still listed in case group {g.name}" for g in directory.groups.values() if code in g.members]
    notes += [f"still a party to agreement {a.name}" for a in directory.agreements.values()
              if code in a.parties]
    return Plan(code, "removed", None, tuple(notes))


def _existing(entries: Entries, code: str) -> Agency:
    found = current_directory(entries).agency(code)
    if found is None:
        raise ConfigError(f"{code} is not in the directory: `liaison agency list` shows who is, "
                          f"`liaison agency add {code} ...` onboards it")
    return found


@dataclass(frozen=True)
class AgencyRequest:
    """One agency to onboard: the options of `liaison agency add`, or one entry of an agencies file."""

    code: str
    name: str
    country: str = ""  # from the code's prefix when empty
    groups: tuple[str, ...] = ()
    clearances: tuple[str, ...] = ()
    hub: bool | None = None  # None: kept as it is (False for a new agency)


def plan_many(entries: Entries, requests: Sequence[AgencyRequest]) -> list[Plan]:
    """`plan_add` for each request against the same directory; an agency listed twice is refused."""
    directory = current_directory(entries)
    plans: dict[str, Plan] = {}
    for r in requests:
        plan = plan_add(directory, r.code, name=r.name, country=r.country, groups=r.groups,
                        clearances=r.clearances, hub=r.hub)
        if plan.code in plans:
            raise ConfigError(f"{plan.code} is listed twice")
        plans[plan.code] = plan
    return list(plans.values())


AGENCY_FILE_KEYS = ("code", "name", "country", "groups", "clearances", "hub")


def parse_agencies(text: str, *, source: str) -> list[AgencyRequest]:
    """The `agencies:` list of a YAML or JSON file, each entry as in `deploy/directory.yaml`.

    An entry is what the agency is: `hub` absent means false, as in the directory file. Its
    status is not the file's to set (`liaison agency suspend` / `resume` change it), nor are
    groups and agreements, which the directory file that `liaison up` publishes holds.
    """
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML or JSON: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict) or set(raw) != {"agencies"} or not isinstance(raw["agencies"], list):
        raise ConfigError(f"{source}: expected one key, `agencies:`, a list of agencies "
                          f"({', '.join(AGENCY_FILE_KEYS)} each)")
    requests = []
    for i, item in enumerate(raw["agencies"]):
        where = f"{source}: agencies[{i}]" + (f" ({item['code']})" if isinstance(item, dict)
                                               and "code" in item else "")
        if isinstance(item, dict) and "status" in item:
            raise ConfigError(f"{where}: status is not set from a file (`liaison agency suspend` or "
                              "`resume` changes it)")
        # The directory file's own parser, so that both files read an agency alike.
        agency = parse_agency_entry(item, where)
        requests.append(AgencyRequest(agency.code, agency.name, agency.country, tuple(sorted(agency.groups)),
                                      tuple(sorted(agency.clearances)), agency.hub))
    if not requests:
        raise ConfigError(f"{source}: lists no agency")
    return requests


def read_agencies(path: Path) -> list[AgencyRequest]:
    """`parse_agencies` of a file; an unreadable file is one ConfigError."""
    return parse_agencies(read_config(path, "agencies"), source=str(path))


# -- the Kafka part ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    """What an onboarding command changed, for the operator."""

    code: str
    directory: DirectoryChange
    topics_created: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    changed_fields: tuple[str, ...] = ()
    access: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.topics_created) or self.directory != "unchanged"

    def summary(self) -> str:
        """One line: `created 7 topics, directory entry added`, or `nothing to change`."""
        parts = []
        if self.topics_created:
            n = len(self.topics_created)
            parts.append(f"created {n} topic{'s' if n != 1 else ''}")
        if self.directory != "unchanged":
            what = {"added": "directory entry added", "removed": "directory entry removed",
                    "updated": f"directory entry updated ({', '.join(self.changed_fields)})",
                    "suspended": "suspended", "resumed": "resumed"}[self.directory]
            parts.append(what)
        return ", ".join(parts) if parts else "nothing to change"

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "changed": self.changed, "summary": self.summary(),
                "directory": self.directory, "changed_fields": list(self.changed_fields),
                "topics_created": list(self.topics_created), "notes": list(self.notes),
                "access": list(self.access)}


async def read_entries(settings: KafkaSettings, *, timeout_s: float = 10.0) -> dict[str, Any]:
    """The current `bus.directory` entries (tombstoned ones gone)."""
    await _require_topics(settings, [settings.topics.directory])
    table = CompactedTable(settings, settings.topics.directory)
    async with kafka_faults(settings, "reading the directory"):
        try:
            await table.start(timeout_s=timeout_s)
            return dict(table.items)
        finally:
            await table.stop()


async def existing_topics(settings: KafkaSettings) -> set[str]:
    admin = AIOKafkaAdminClient(**settings.kafka_kwargs())
    async with kafka_faults(settings, "listing topics"):
        await admin.start()
        try:
            return set(await admin.list_topics())
        finally:
            await admin.close()


async def _require_topics(settings: KafkaSettings, topics: list[str]) -> None:
    present = await existing_topics(settings)
    missing = [t for t in topics if t not in present]
    if missing:
        raise TopicMissing(f"{', '.join(missing)} does not exist: provision the bus first (`liaison up`), "
                           "or check LIAISON_TOPIC_PREFIX")


async def _write(settings: KafkaSettings, *plans: Plan) -> None:
    """The entries of `plans` that change, in one batch of records."""
    if changes := {agency_key(plan.code): plan.entry for plan in plans if plan.writes}:
        async with kafka_faults(settings, "writing the directory"):
            await publish_entries(settings, changes)


async def add_agency(settings: KafkaSettings, code: str, *, name: str, country: str,
                     groups: Iterable[str] = (), clearances: Iterable[str] = (), hub: bool | None = None,
                     partitions: int = 1, replication: int | None = None,
                     access: AccessControl | None = None) -> Outcome:
    """Create the agency's topics and publish its directory entry; idempotent."""
    request = AgencyRequest(code, name, country, tuple(groups), tuple(clearances), hub)
    outcomes = await onboard_many(settings, [request], partitions=partitions, replication=replication,
                                  access=access)
    return outcomes[0]


async def onboard_many(settings: KafkaSettings, requests: Sequence[AgencyRequest], *, partitions: int = 1,
                       replication: int | None = None, access: AccessControl | None = None
                       ) -> list[Outcome]:
    """Onboard every agency of `requests` together; idempotent, one Outcome each in their order.

    One read of the directory; every missing topic in CreateTopics requests of a few hundred
    topics; on a secured cluster the ACLs, credentials and quotas of all of them in batched
    requests (`AccessControl.grant_many`); one write of the changed directory entries, last, so
    that the router routes to an agency only once its topics and principal exist. `replication`
    overrides the settings' replication factor (`liaison.replication`).
    """
    if partitions < 1 or (replication is not None and replication < 1):
        raise ConfigError("--partitions and --replication must be at least 1")
    plans = plan_many(await read_entries(settings), requests)
    if not plans:
        return []
    topics = settings.topics
    specs = [spec for plan in plans for spec in topics.agency_topic_specs(plan.code, partitions=partitions)]
    who = plans[0].code if len(plans) == 1 else f"{len(plans)} agencies"
    async with kafka_faults(settings, f"creating the topics of {who}"):
        created = set(await ensure_topics(settings, specs, replication=replication))
    granted = await (access or NoAccessControl()).grant_many(settings, [plan.code for plan in plans])
    await _write(settings, *plans)
    return [Outcome(plan.code, plan.change, tuple(t for t in topics.agency_topics(plan.code) if t in created),
                    plan.notes, plan.changed_fields, tuple(granted[plan.code])) for plan in plans]


async def set_status(settings: KafkaSettings, code: str, status: AgencyStatus, *,
                     access: AccessControl | None = None) -> Outcome:
    """Suspend (the router stops delivering, the broker stops letting it in) or resume an agency."""
    plan = plan_status(await read_entries(settings), code, status)
    control = access or NoAccessControl()
    done: list[str] = []
    if status == "SUSPENDED":
        await _write(settings, plan)
        done = await control.revoke(settings, plan.code)
    else:
        done = await control.grant(settings, plan.code)
        await _write(settings, plan)
    return Outcome(plan.code, plan.change, notes=plan.notes if not plan.writes else (), access=tuple(done))


async def rotate_credential(settings: KafkaSettings, code: str, *, access: AccessControl) -> Outcome:
    """A new password for an active agency; the old one no longer logs in."""
    code = check_agency_code(code.strip().upper(), "agency")
    agency = _existing(await read_entries(settings), code)
    if agency.status == "SUSPENDED":
        raise ConfigError(f"{code} is SUSPENDED: `liaison agency resume {code}` issues a new credential")
    return Outcome(code, "unchanged", access=tuple(await access.rotate(settings, code)))


async def remove_agency(settings: KafkaSettings, code: str, *, access: AccessControl | None = None,
                        ) -> Outcome:
    """Delete the directory entry; the agency's topics and the audit trail are kept."""
    plan = plan_remove(await read_entries(settings), code)
    revoked: list[str] = []
    if plan.writes:
        revoked = await (access or NoAccessControl()).forget(settings, plan.code)
    await _write(settings, plan)
    kept = (f"its {len(settings.topics.agency_topics(plan.code))} topics and the audit trail are kept "
            "(delete the topics with your Kafka tools if its data must go)",) if plan.writes else ()
    return Outcome(plan.code, plan.change, notes=plan.notes + kept, access=tuple(revoked))


@dataclass(frozen=True)
class AgencyView:
    agency: Agency
    topics: dict[str, bool]  # topic name -> exists
    quotas: QuotaView | None = None  # on a secured cluster, when asked for

    def to_dict(self) -> dict[str, Any]:
        extra = {"user": self.quotas.user, "quotas": self.quotas.quota.to_dict()} if self.quotas else {}
        return {**self.agency.to_entry(), "topics": self.topics, **extra}


async def list_agencies(settings: KafkaSettings) -> list[AgencyView]:
    """Every agency in the directory, with which of its topics exist."""
    entries = await read_entries(settings)
    present = await existing_topics(settings)
    directory = current_directory(entries)
    return [AgencyView(a, {t: t in present for t in settings.topics.agency_topics(a.code)})
            for _, a in sorted(directory.agencies.items())]


async def show_agency(settings: KafkaSettings, code: str, *,
                      access: AccessControl | None = None) -> AgencyView:
    """One agency's entry, its topics and, with `access` on a secured cluster, its user's quotas."""
    code = check_agency_code(code.strip().upper(), "agency")
    agency = _existing(await read_entries(settings), code)
    present = await existing_topics(settings)
    quotas = await access.quota(settings, code, Quota()) if access is not None else None
    return AgencyView(agency, {t: t in present for t in settings.topics.agency_topics(code)}, quotas)


async def agency_quota(settings: KafkaSettings, code: str, changes: Quota, *,
                       access: AccessControl) -> QuotaView:
    """Show an agency's quotas, or change the ones `changes` sets; it must be in the directory."""
    code = check_agency_code(code.strip().upper(), "agency")
    changes.checked()
    _existing(await read_entries(settings), code)
    view = await access.quota(settings, code, changes)
    if view is None:
        raise ConfigError(f"the cluster is not secured (LIAISON_SECURITY_PROTOCOL="
                          f"{settings.security_protocol}): quotas limit an authenticated user, and here "
                          "every client is the same anonymous one")
    return view
