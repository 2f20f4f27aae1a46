"""Two buses on one secured cluster (prefixes `a.` and `b.`) with the same agency code stay apart.

Each bus's FR-PN is its own user (`a.FR-PN`, `b.FR-PN`) with its own credential, ACLs, groups and
quotas: the broker refuses either on the other's topics, and suspending or rotating one leaves the
other working. Uses the secured broker of `test_security` (a module of its own here).
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
)
from pydantic import SecretStr

from liaison import onboarding
from liaison.core.settings import KafkaSettings
from liaison.errors import ConfigError
from liaison.provision import provision
from liaison.security.acls import ROUTER, SERVICES
from liaison.security.admin import SecurityAdmin
from liaison.security.bus import secure_principals
from liaison.security.credentials import Endpoints
from liaison.security.quotas import Quota, QuotaAdmin
from tests.integration.test_security import Cluster, _denied_read, _login, _send
from tests.integration.test_security import cluster as secured_cluster  # noqa: F401  # a fixture, by this name
from tests.kafka_helpers import eventually

BUSES = ("a.", "b.")


def _bus(cluster: Cluster, prefix: str) -> KafkaSettings:
    return cluster.admin(topic_prefix=prefix)


def _user(cluster: Cluster, prefix: str, name: str) -> KafkaSettings:
    """How user `<prefix><name>` of bus `prefix` connects, with its credential file."""
    user = f"{prefix}{name}"
    return cluster.admin(topic_prefix=prefix, sasl_username=user, sasl_password=_password(cluster, user))


def _password(cluster: Cluster, user: str) -> SecretStr:
    found = cluster.files.read(user)
    assert found is not None, user
    return found.password


async def _joins(settings: KafkaSettings, topic: str, group: str) -> None:
    consumer = AIOKafkaConsumer(topic, **settings.kafka_kwargs(), group_id=group, request_timeout_ms=10_000)
    try:
        await consumer.start()
        await consumer.getmany(timeout_ms=100)
    finally:
        await consumer.stop()


@pytest.fixture(scope="module")
def two_buses(request: pytest.FixtureRequest) -> Cluster:
    """Buses `a.` and `b.` provisioned on the secured cluster, FR-PN and DE-BKA onboarded on each."""
    cluster: Cluster = request.getfixturevalue("secured_cluster")

    async def setup() -> None:
        for prefix in BUSES:
            settings = _bus(cluster, prefix)
            await provision(settings, partitions=1)
            control = onboarding.KafkaAccessControl(cluster.files)
            for code in ("FR-PN", "DE-BKA"):
                await onboarding.set_status(settings, code, "ACTIVE", access=control)
    asyncio.run(setup())
    return cluster


async def test_the_same_code_on_two_buses_is_two_users_with_two_credentials(two_buses: Cluster) -> None:
    """a.FR-PN and b.FR-PN: separate credentials; neither password logs in as the other."""
    a_pw, b_pw = _password(two_buses, "a.FR-PN"), _password(two_buses, "b.FR-PN")
    assert a_pw.get_secret_value() != b_pw.get_secret_value()
    await _login(two_buses, "a.FR-PN", a_pw)
    await _login(two_buses, "b.FR-PN", b_pw)
    with pytest.raises(SaslAuthenticationFailed):
        await _login(two_buses, "b.FR-PN", a_pw)
    with pytest.raises(SaslAuthenticationFailed):
        await _login(two_buses, "FR-PN", a_pw)  # no user of that name exists: each bus has its own
    admin = SecurityAdmin(_bus(two_buses, "a."))
    a_names = {g.name for g in await admin.grants_of("a.FR-PN")}
    b_names = {g.name for g in await admin.grants_of("b.FR-PN")}
    assert a_names
    assert b_names
    assert all(n.startswith("a.") for n in a_names)
    assert all(n.startswith("b.") for n in b_names)


async def test_each_credential_works_only_on_its_own_bus(two_buses: Cluster) -> None:
    """Writes, reads and consumer groups of the other bus's FR-PN are refused by the broker."""
    for mine, other in (("a.", "b."), ("b.", "a.")):
        me = _user(two_buses, mine, "FR-PN")
        own, theirs = me.topics, _bus(two_buses, other).topics
        await _send(me, own.outbox("Alert", "FR-PN"))  # the control case
        await _joins(me, own.inbox("Query", "FR-PN"), f"{mine}FR-PN.check")
        with pytest.raises(TopicAuthorizationFailedError):
            await _send(me, theirs.outbox("Alert", "FR-PN"))
        await _denied_read(me, theirs.inbox("Alert", "FR-PN"), group=f"{mine}FR-PN.peek")
        await _denied_read(me, theirs.receipts("FR-PN"))
        with pytest.raises(GroupAuthorizationFailedError):
            await _joins(me, own.inbox("Query", "FR-PN"), f"{other}FR-PN.inbox")


async def test_suspending_and_rotating_on_one_bus_leaves_the_other_working(two_buses: Cluster) -> None:
    """Suspend a.DE-BKA: b.DE-BKA still sends; rotate b.DE-BKA: a.DE-BKA's (new) password still works."""
    a, b = _bus(two_buses, "a."), _bus(two_buses, "b.")
    control = onboarding.KafkaAccessControl(two_buses.files)
    a_old = _password(two_buses, "a.DE-BKA")
    await onboarding.set_status(a, "DE-BKA", "SUSPENDED", access=control)
    with pytest.raises(SaslAuthenticationFailed):
        await _login(two_buses, "a.DE-BKA", a_old)
    await _send(_user(two_buses, "b.", "DE-BKA"), b.topics.outbox("Query", "DE-BKA"))
    assert len(await SecurityAdmin(b).grants_of("b.DE-BKA")) == 15

    await onboarding.set_status(a, "DE-BKA", "ACTIVE", access=control)
    b_old = _password(two_buses, "b.DE-BKA")
    rotated = await onboarding.rotate_credential(b, "DE-BKA", access=control)
    assert any("b.DE-BKA" in line for line in rotated.access)
    with pytest.raises(SaslAuthenticationFailed):
        await _login(two_buses, "b.DE-BKA", b_old)
    await _send(_user(two_buses, "b.", "DE-BKA"), b.topics.outbox("Query", "DE-BKA"))
    await _send(_user(two_buses, "a.", "DE-BKA"), a.topics.outbox("Query", "DE-BKA"))


async def test_a_quota_change_on_one_bus_leaves_the_other_alone(two_buses: Cluster) -> None:
    a = _bus(two_buses, "a.")
    view = await onboarding.agency_quota(a, "FR-PN", Quota(produce_bytes=64 * 1024),
                                         access=onboarding.KafkaAccessControl(two_buses.files))
    assert (view.user, view.quota.produce_bytes) == ("a.FR-PN", 64 * 1024)
    async with QuotaAdmin(a) as quotas:
        both = await eventually(lambda: quotas.describe_users(["a.FR-PN", "b.FR-PN"]),
                                lambda q: q["a.FR-PN"].produce_bytes == 64 * 1024, timeout_s=10)
    assert both["b.FR-PN"].produce_bytes == 1024 * 1024


async def test_services_of_each_bus_are_their_own_users(two_buses: Cluster) -> None:
    """a.liaison-router reads bus a's outboxes, not bus b's; its group is a.liaison-router."""
    for prefix in BUSES:
        await secure_principals(_bus(two_buses, prefix), two_buses.files,
                                Endpoints(two_buses.bootstrap, "", two_buses.tls.ca_cert), [])
    assert {f"a.{s}" for s in SERVICES} <= {p.stem for p in two_buses.files.home.glob("a.*.env")}
    router = _user(two_buses, "a.", ROUTER)
    await _joins(router, router.topics.outbox("Alert", "FR-PN"), f"a.{ROUTER}")
    await _denied_read(router, _bus(two_buses, "b.").topics.outbox("Alert", "FR-PN"), group=f"a.{ROUTER}")
    with pytest.raises(GroupAuthorizationFailedError):
        await _joins(router, router.topics.outbox("Alert", "FR-PN"), f"b.{ROUTER}")


def test_a_prefix_without_a_dot_is_refused_on_a_secured_cluster(two_buses: Cluster) -> None:
    """Bus `X` would name FR-PN `XFR-PN`, another bus's agency XFR-PN: one line, before any change."""
    with pytest.raises(ConfigError, match="must end with a dot"):
        onboarding.access_control(two_buses.admin(topic_prefix="X"), None)
