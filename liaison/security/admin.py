"""SCRAM credentials and ACLs on the broker, through confluent-kafka's AdminClient.

aiokafka's admin client has no ACL or SCRAM calls; librdkafka's has both, so this module is the
one place that uses it. Its calls block on futures, so each runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

from liaison.core.settings import KafkaSettings
from liaison.errors import LiaisonError
from liaison.kafka_admin import chunks
from liaison.security.acls import Grant, principal
from liaison.security.credentials import SCRAM_ITERATIONS, Credential

T = TypeVar("T")
ANY: Any = None  # librdkafka's "match anything" in a filter (its stubs say str)
BATCH = 1000
"""ACLs or credentials per request: a KRaft controller refuses an operation of more than 10,000
metadata records, and onboarding a thousand agencies writes 15,000 ACLs."""
SCRAM_BATCH = 100
"""Credentials per AlterUserScramCredentials request (see `SecurityAdmin.set_credentials`)."""
SHOW_S_PER_CHANGE = 0.02
"""How much longer than a request's timeout the broker may take to show each change of a batch: it
applies ACL and credential records only after those before them, and creating a thousand agencies'
7,000 partitions keeps a broker on two busy cores busy for a minute or two."""
FEW_USERS = 20
"""Up to this many users, each one's ACLs are read by a filter on its principal; for more, one
request reads every ACL of the cluster (a thousand filtered requests would cost more)."""


class SecurityAdminError(LiaisonError):
    """The broker refused or could not answer a credential or ACL change."""


def librdkafka_config(settings: KafkaSettings) -> dict[str, Any]:
    """The same connection as `settings.kafka_kwargs()`, in librdkafka's words."""
    conf: dict[str, Any] = {"bootstrap.servers": settings.bootstrap_servers, "client.id": settings.client_id,
                            "security.protocol": settings.security_protocol}
    if settings.security_protocol.startswith("SASL"):
        conf["sasl.mechanisms"] = settings.sasl_mechanism
        conf["sasl.username"] = settings.sasl_username
        conf["sasl.password"] = settings.sasl_password.get_secret_value() if settings.sasl_password else ""
    if settings.security_protocol.endswith("SSL") and settings.ssl_cafile:
        conf["ssl.ca.location"] = settings.ssl_cafile
    return conf


def _binding(who: str, grant: Grant) -> AclBinding:
    return AclBinding(ResourceType[grant.resource], grant.name, ResourcePatternType[grant.pattern],
                      principal(who), "*", AclOperation[grant.operation], AclPermissionType.ALLOW)


def _every_acl_of(user: str | None) -> AclBindingFilter:
    """A filter matching every ACL of `user`, or of every principal when None."""
    return AclBindingFilter(ResourceType.ANY, ANY, ResourcePatternType.ANY,
                            ANY if user is None else principal(user), ANY, AclOperation.ANY,
                            AclPermissionType.ANY)


def _grant(binding: AclBinding) -> Grant | None:
    """Our view of an ACL; None for one we never create (a DENY, a host, another operation)."""
    if binding.permission_type != AclPermissionType.ALLOW or binding.host != "*":
        return None
    b: Any = binding
    try:
        return Grant(b.restype.name, b.name, b.resource_pattern_type.name, b.operation.name)
    except AttributeError:
        return None


class SecurityAdmin:
    """Credentials and ACLs of principals; needs the admin's (super user's) settings."""

    def __init__(self, settings: KafkaSettings, *, timeout_s: float = 15.0) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        self._client: AdminClient | None = None

    def _admin(self) -> AdminClient:
        if self._client is None:
            self._client = AdminClient(librdkafka_config(self.settings))
        return self._client

    async def _call(self, doing: str, work: Callable[[AdminClient], T]) -> T:
        try:
            return await asyncio.to_thread(work, self._admin())
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if not isinstance(err, KafkaError):
                raise SecurityAdminError(f"{doing}: {exc}") from None
            # The broker's own text can be a whole forwarded request: its error name says enough.
            raise SecurityAdminError(f"{doing}: {err.name()}: {err.str()[:160]}") from None

    # -- SCRAM credentials ---------------------------------------------------------------------
    async def users_with_credentials(self, users: Iterable[str]) -> set[str]:
        """Which of `users` have a SCRAM credential on the broker."""
        wanted = list(users)

        def work(admin: AdminClient) -> set[str]:
            found = set()
            futures: dict[str, Any] = admin.describe_user_scram_credentials(  # type: ignore[assignment]
                wanted, request_timeout=self.timeout_s)
            for user, future in futures.items():
                try:
                    future.result()
                except KafkaException as exc:
                    if exc.args[0].code() == KafkaError.RESOURCE_NOT_FOUND:
                        continue
                    raise
                found.add(user)
            return found

        return await self._call("reading SCRAM credentials", work) if wanted else set()

    async def set_credentials(self, credentials: Iterable[Credential]) -> None:
        """Create or replace SCRAM-SHA-512 credentials (a replaced password stops working for new logins).

        librdkafka salts and hashes each password (SCRAM_ITERATIONS rounds) while it builds the
        request, in one thread, and its timeout counts that time: tens of milliseconds a user on
        a busy machine. So the users go in requests of `SCRAM_BATCH`, one after the other.
        """
        changes: list[Any] = [UserScramCredentialUpsertion(
            c.username, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS),
            c.password.get_secret_value().encode()) for c in credentials]
        if changes:
            def work(admin: AdminClient) -> None:
                for chunk in chunks(changes, SCRAM_BATCH):
                    _wait(admin.alter_user_scram_credentials(list(chunk), request_timeout=self.timeout_s))

            await self._call("setting SCRAM credentials", work)
            users = {change.user for change in changes}
            await self._until_shown("setting SCRAM credentials", len(changes),
                                    lambda: self.users_with_credentials(users), lambda have: users <= have)

    async def delete_credential(self, user: str) -> bool:
        """Remove a user's SCRAM credential; False when there was none."""
        if user not in await self.users_with_credentials([user]):
            return False
        change: Any = UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_512)
        try:
            await self._call(f"deleting the SCRAM credential of {user}", lambda admin: _wait(
                admin.alter_user_scram_credentials([change], request_timeout=self.timeout_s)))
        except SecurityAdminError:
            if user in await self.users_with_credentials([user]):
                raise
            return False  # another admin (the delegations service, say) deleted it meanwhile
        await self._until_shown(f"deleting the SCRAM credential of {user}", 1,
                                lambda: self.users_with_credentials([user]), lambda have: user not in have)
        return True

    # -- ACLs --------------------------------------------------------------------------------------
    async def grants_of(self, user: str) -> set[Grant]:
        """The ALLOW ACLs the broker holds for `user` (in the form Liaison writes them)."""
        return (await self.grants_by_user([user]))[user]

    async def grants_by_user(self, users: Iterable[str]) -> dict[str, set[Grant]]:
        """The ALLOW ACLs the broker holds for each of `users` (see `FEW_USERS` for how they are read)."""
        wanted = list(dict.fromkeys(users))
        names = {principal(user): user for user in wanted}

        def work(admin: AdminClient) -> dict[str, set[Grant]]:
            if len(wanted) <= FEW_USERS:
                futures = [admin.describe_acls(_every_acl_of(user), request_timeout=self.timeout_s)
                           for user in wanted]
                bindings = [b for future in futures for b in future.result()]
            else:
                bindings = admin.describe_acls(_every_acl_of(None), request_timeout=self.timeout_s).result()
            found: dict[str, set[Grant]] = {user: set() for user in wanted}
            for binding in bindings:
                user = names.get(binding.principal)
                if user is not None and (grant := _grant(binding)) is not None:
                    found[user].add(grant)
            return found

        what = f"the ACLs of {wanted[0]}" if len(wanted) == 1 else f"the ACLs of {len(wanted)} users"
        return await self._call(f"reading {what}", work) if wanted else {}

    async def set_grants(self, user: str, wanted: Iterable[Grant]) -> tuple[list[Grant], list[Grant]]:
        """Make `user`'s ACLs exactly `wanted`: returns (added, removed)."""
        return (await self.set_grants_many({user: wanted}))[user]

    async def set_grants_many(self, wanted: Mapping[str, Iterable[Grant]]
                              ) -> dict[str, tuple[list[Grant], list[Grant]]]:
        """Make each user's ACLs exactly its `wanted` grants: returns (added, removed) per user.

        One read, then every addition and every removal in requests of `BATCH`, all sent at once.
        """
        want = {user: set(grants) for user, grants in wanted.items()}
        have = await self.grants_by_user(want)
        changes = {user: (sorted(want[user] - have[user]), sorted(have[user] - want[user])) for user in want}
        additions = [_binding(user, g) for user, (added, _) in changes.items() for g in added]
        removals: list[Any] = [_binding(user, g) for user, (_, removed) in changes.items() for g in removed]
        if additions or removals:
            who = next(iter(want)) if len(want) == 1 else f"{len(want)} users"
            await self._call(f"changing the ACLs of {who}", lambda admin: _wait_all([
                *(admin.create_acls(list(chunk), request_timeout=self.timeout_s)
                  for chunk in chunks(additions, BATCH)),
                *(admin.delete_acls(list(chunk), request_timeout=self.timeout_s)
                  for chunk in chunks(removals, BATCH))]))
            changed = [user for user, (added, removed) in changes.items() if added or removed]
            await self._until_shown(f"changing the ACLs of {who}", len(additions) + len(removals),
                                    lambda: self.grants_by_user(changed),
                                    lambda have: all(have[user] == want[user] for user in changed))
        return changes

    async def _until_shown(self, doing: str, changes: int, read: Callable[[], Awaitable[T]],
                           shown: Callable[[T], bool]) -> None:
        """Return once the broker shows `changes` changes: the controller took them, and the broker
        that answers applies them a moment later (after thousands of new partitions, minutes later).
        Until then a login with a new credential, or a request its new ACLs allow, could be refused."""
        allowed = self.timeout_s + SHOW_S_PER_CHANGE * changes
        deadline = time.monotonic() + allowed
        while not shown(await read()):
            if time.monotonic() >= deadline:
                raise SecurityAdminError(f"{doing}: the broker took the change but did not show it within "
                                         f"{allowed:.0f} s")
            await asyncio.sleep(0.1 if changes < 1000 else 0.5)  # reading 15,000 ACLs is not free

    async def revoke_all(self, user: str) -> int:
        """Delete every ACL naming `user`; returns how many there were."""
        query = _every_acl_of(user)
        results = await self._call(f"deleting the ACLs of {user}", lambda admin: _wait(
            admin.delete_acls([query], request_timeout=self.timeout_s)))
        deleted = sum(len(r) for r in results.values() if isinstance(r, list))
        if deleted:  # what is revoked must be refused once this returns
            await self._until_shown(f"deleting the ACLs of {user}", deleted, lambda: self.grants_of(user),
                                    lambda have: not have)
        return deleted


def _wait(futures: dict[Any, Any]) -> dict[Any, Any]:
    """Every future's result (the first error raised), keyed as librdkafka keyed them."""
    return {key: future.result() for key, future in futures.items()}


def _wait_all(requests: Iterable[dict[Any, Any]]) -> None:
    """Wait for every future of requests already sent (so they run together); the first error raises."""
    for futures in list(requests):
        _wait(futures)
