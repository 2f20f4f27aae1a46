"""What a hostile agency, or anyone else on the host, can learn or keep: on real brokers.

Two brokers of this module's own, each in a temporary folder on free ports: the whole secured
stack as `liaison up` starts it (no password in any process's argv or environment, a private run
directory, connection limits, the policy's audit retention on an existing topic), and a secured
broker whose logins last seconds (a rotated password cuts an open connection; an unchanged one
rides through).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaClient, AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.conn import AIOKafkaConnection, create_conn
from aiokafka.errors import KafkaConnectionError, NodeNotReadyError, SaslAuthenticationFailed
from aiokafka.protocol.metadata import MetadataRequest
from pydantic import SecretStr

from liaison.core.logs import kafka_client_logs_silenced
from liaison.core.settings import KafkaSettings
from liaison.errors import LocalBrokerError
from liaison.kafka_admin import ConfigChange, ensure_topics
from liaison.local.broker import BrokerConfig, BrokerLimits, BrokerSecurity, LocalBroker, free_port
from liaison.local.stack import DEFAULT_POLICY, SERVICES, LocalStack
from liaison.security.acls import ROUTER
from liaison.security.admin import SecurityAdmin
from liaison.security.bus import secure_principals
from liaison.security.credentials import Credential, CredentialFiles, Endpoints, new_password
from liaison.security.tls import DevTls
from liaison.topics import Topics
from tests.kafka_helpers import eventually

DAY_MS = 86_400_000
REAUTH_KEY = "listener.name.sasl_ssl.scram-sha-512.connections.max.reauth.ms"
CALLER_SECRETS = {"LIAISON_SASL_PASSWORD": "callers-password-9f3k", "DEPLOY_TOKEN": "callers-token-2m8q"}


# -- the stack as `liaison up` starts it ---------------------------------------------------------
@dataclass(frozen=True)
class Spawn:
    argv: list[str]
    env: dict[str, str]


@dataclass(frozen=True)
class Up:
    stack: LocalStack
    spawns: list[Spawn]

    @property
    def run(self) -> Path:
        return self.stack.run


@contextlib.contextmanager
def recording_spawns() -> Iterator[list[Spawn]]:
    """Every process started through `subprocess` meanwhile: its argv and the environment it got."""
    seen: list[Spawn] = []
    real = subprocess.Popen

    class Recording(real):  # type: ignore[misc,valid-type]  # a spy in front of the real class
        def __init__(self, args: Any, *more: Any, **kwargs: Any) -> None:
            env = kwargs.get("env")
            seen.append(Spawn([str(a) for a in args], dict(os.environ if env is None else env)))
            super().__init__(args, *more, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess, "Popen", Recording)
        yield seen


def policy_file(folder: Path, days: int) -> Path:
    """deploy/policy.yaml with another audit retention."""
    text = DEFAULT_POLICY.read_text()
    assert "retention_days: 1095" in text
    path = folder / f"policy-{days}.yaml"
    path.write_text(text.replace("retention_days: 1095", f"retention_days: {days}"))
    return path


def _stack(run: Path, broker: BrokerConfig, registry_port: int, metrics_ports: dict[str, int],
           policy: Path) -> LocalStack:
    return LocalStack(broker, run=run, secure=True, registry_port=registry_port, policy_file=policy,
                      metrics_ports=metrics_ports)


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """A secured stack started with a policy keeping the audit trail 30 days, and a caller with secrets."""
    run = tmp_path_factory.mktemp("run")
    registry_port, metrics_ports = free_port(), {spec.name: free_port() for spec in SERVICES}
    with pytest.MonkeyPatch.context() as patch:
        for key in [k for k in os.environ if k.startswith("LIAISON_BROKER_")]:
            patch.delenv(key)  # the defaults, as `liaison up` has them
        broker = BrokerConfig(home=run / "kafka", port=free_port(), controller_port=free_port())
        for key, value in CALLER_SECRETS.items():
            patch.setenv(key, value)
        stack = _stack(run, broker, registry_port, metrics_ports,
                       policy_file(tmp_path_factory.mktemp("policy"), 30))
        with recording_spawns() as spawns:
            try:
                stack.up(timeout_s=120)
            except Exception:
                stack.down()
                raise
    try:
        yield Up(stack, spawns)
    finally:
        assert stack.down() == ["delegations", "deadlines", "router", "registry", "kafka"]


async def _configs(settings: KafkaSettings, kind: ConfigResourceType, name: str) -> dict[str, str]:
    admin = AIOKafkaAdminClient(**settings.kafka_kwargs())
    await admin.start()
    try:
        [response] = await admin.describe_configs([ConfigResource(kind, name)])
    finally:
        await admin.close()
    [(code, message, _, _, entries)] = response.resources
    assert code == 0, message
    return {entry[0]: entry[1] for entry in entries}


def _secrets(run: Path) -> list[str]:
    files = sorted((run / "secrets").glob("*.env"))
    found = [line.split("=", 1)[1] for f in files for line in f.read_text().splitlines()
             if line.startswith("LIAISON_SASL_PASSWORD=")]
    assert len(found) == len(files) >= 5, files  # the admin, three services, the agencies
    return [*found, *CALLER_SECRETS.values()]


def test_no_password_in_any_command_line_or_environment(up: Up) -> None:
    """Neither what the stack spawned (storage tool, broker, services) nor what still runs shows a secret.

    `/proc/<pid>/cmdline` is readable by every local user; `/proc/<pid>/environ` by the owner.
    """
    secrets = _secrets(up.run)
    mains = {spawn.argv[-1] for spawn in up.spawns}  # a service's module, the storage tool's @argfile
    assert any(m.startswith("@") for m in mains)
    assert {"services.registry", "services.router", "services.deadlines"} <= mains
    assert any("kafka.Kafka" in s.argv for s in up.spawns)
    for spawn in up.spawns:
        seen = "\0".join([*spawn.argv, *(f"{k}={v}" for k, v in spawn.env.items())])
        assert [s for s in secrets if s in seen] == [], spawn.argv[:3]
    assert list(up.stack.broker.config.home.glob(".args-*")) == []  # the argfile is gone

    rows = up.stack.status()
    assert all(row.pid is not None for row in rows), rows
    for row in rows:
        cmdline = Path(f"/proc/{row.pid}/cmdline").read_bytes()
        environ = Path(f"/proc/{row.pid}/environ").read_bytes()
        assert [s for s in secrets if s.encode() in cmdline + environ] == [], row.name
        if row.name != "kafka":  # a service finds its password in its 0600 file
            assert b"LIAISON_CREDENTIALS=" in environ, row.name


def test_everything_under_the_run_directory_is_the_owners_only(up: Up) -> None:
    """Folders 0700 and files 0600 all the way down: credentials, certificates, logs, the broker's data."""
    loose, count = [], 0
    for top, dirs, files in os.walk(up.run):
        for path in [Path(top), *(Path(top) / n for n in dirs + files)]:
            try:
                mode = stat.S_IMODE(path.lstat().st_mode)
            except FileNotFoundError:  # a segment the broker just deleted
                continue
            count += 1
            if mode & 0o077:
                loose.append(f"{oct(mode)} {path.relative_to(up.run)}")
    assert loose == []
    for made in ("kafka/data/meta.properties", "kafka/server.properties", "kafka/kafka.log",
                 "logs/router.log", "secrets/liaison-admin.env", "tls/ca.pem", "tls/server-key.pem",
                 "router.pid"):
        assert (up.run / made).is_file(), made
    assert count > 100  # the broker's partition folders and files are in the walk


async def test_liaison_up_starts_the_broker_with_connection_limits_and_reauthentication(up: Up) -> None:
    """Defaults read back: logins last an hour, 2,000 connections per address, 1 s per refusal."""
    configs = await _configs(up.stack.admin_settings(), ConfigResourceType.BROKER, "1")
    assert configs[REAUTH_KEY] == str(3_600_000)
    assert configs["max.connections.per.ip"] == "2000"
    assert configs["max.connections"] == "10000"
    assert configs["connection.failed.authentication.delay.ms"] == "1000"


async def _set_topic_configs(settings: KafkaSettings, topic: str, configs: dict[str, str]) -> None:
    admin = AIOKafkaAdminClient(**settings.kafka_kwargs())
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs)])
    finally:
        await admin.close()


def test_liaison_up_applies_the_policys_audit_retention_to_an_existing_topic(
        up: Up, tmp_path: Path) -> None:
    """The audit trail was created keeping 30 days; `liaison up` with a 90-day policy changes it in place.

    Only that config changes: one an operator set on the topic stays.
    """
    settings = up.stack.admin_settings()
    audit = settings.topics.audit
    before = asyncio.run(_configs(settings, ConfigResourceType.TOPIC, audit))
    assert before["retention.ms"] == str(30 * DAY_MS)
    asyncio.run(_set_topic_configs(settings, audit, {"retention.ms": str(30 * DAY_MS),
                                                     "max.message.bytes": "2000000"}))
    again = _stack(up.run, up.stack.broker.config, up.stack.registry_port,
                   {s.name: up.stack.metrics_port(s) for s in SERVICES}, policy_file(tmp_path, 90))
    again.up(timeout_s=120)
    assert again.topic_changes == [ConfigChange(audit, "retention.ms", str(30 * DAY_MS), str(90 * DAY_MS))]
    after = asyncio.run(_configs(settings, ConfigResourceType.TOPIC, audit))
    assert after["retention.ms"] == str(90 * DAY_MS)
    assert after["max.message.bytes"] == "2000000"
    again.up(timeout_s=120)
    assert again.topic_changes == []  # nothing left to change


# -- a broker whose logins last seconds ----------------------------------------------------------
WINDOW_S = 6.0


@dataclass(frozen=True)
class Bus:
    broker: LocalBroker
    files: CredentialFiles

    def admin(self) -> KafkaSettings:
        return self.broker.config.admin_settings()

    def as_user(self, user: str, password: SecretStr | None = None) -> KafkaSettings:
        cred = self.files.read(user)
        secret = password or (cred.password if cred else SecretStr("none"))
        return self.admin().model_copy(update={"sasl_username": user, "sasl_password": secret})


@pytest.fixture(scope="module")
def bus() -> Iterator[Bus]:
    """A secured broker with a 6 s login lifetime and its own limits; FR-PN, DE-BKA and the router."""
    with tempfile.TemporaryDirectory(prefix="liaison-reauth-") as home:
        tls, files = DevTls(Path(home) / "tls"), CredentialFiles(Path(home) / "secrets")
        limits = BrokerLimits(reauth_ms=int(WINDOW_S * 1000), max_connections_per_ip=500,
                              max_connections_per_ip_overrides="127.0.0.2:5", max_connections=900,
                              failed_auth_delay_ms=1500)
        broker = LocalBroker(BrokerConfig(home=Path(home) / "kafka", port=free_port(),
                                          controller_port=free_port(), limits=limits,
                                          security=BrokerSecurity(tls, new_password())))
        try:
            broker.start(timeout_s=90)
        except LocalBrokerError as exc:
            pytest.fail(f"could not start the secured broker: {exc}", pytrace=False)
        try:
            found = Bus(broker, files)
            settings, names = found.admin(), Topics()
            asyncio.run(ensure_topics(settings, [*names.agency_topic_specs("FR-PN"),
                                                 *names.agency_topic_specs("DE-BKA")]))
            endpoints = Endpoints(broker.config.bootstrap, "", tls.ca_cert)
            asyncio.run(secure_principals(settings, files, endpoints, ["FR-PN", "DE-BKA"], services=[ROUTER]))
            yield found
        finally:
            broker.stop(grace_s=20)


async def _connect(bus: Bus, user: str, password: SecretStr) -> AIOKafkaConnection:
    """One connection logged in as `user`: what every aiokafka client holds to each broker."""
    host, port = bus.broker.config.bootstrap.split(":")
    ssl_context = bus.admin().kafka_kwargs()["ssl_context"]
    return await create_conn(host, int(port), ssl_context=ssl_context, security_protocol="SASL_SSL",
                             sasl_mechanism="SCRAM-SHA-512", sasl_plain_username=user,
                             sasl_plain_password=password.get_secret_value(), request_timeout_ms=10_000)


async def test_the_broker_applies_the_limits_it_was_given(bus: Bus) -> None:
    """Reading the broker's configuration back shows each `BrokerLimits` value."""
    configs = await _configs(bus.admin(), ConfigResourceType.BROKER, "1")
    assert configs[REAUTH_KEY] == "6000"
    assert configs["max.connections.per.ip"] == "500"
    assert configs["max.connections.per.ip.overrides"] == "127.0.0.2:5"
    assert configs["max.connections"] == "900"
    assert configs["connection.failed.authentication.delay.ms"] == "1500"


async def test_a_refused_login_is_answered_only_after_the_delay(bus: Bus) -> None:
    """Each wrong password costs a guesser 1.5 s; the right one is answered at once."""
    async with every_connection_closed(bus):
        started = time.monotonic()
        with pytest.raises(SaslAuthenticationFailed):
            await _connect(bus, "FR-PN", SecretStr("a-guess"))
        refused = time.monotonic() - started
        assert refused >= 1.4
        password = bus.as_user("FR-PN").sasl_password
        assert password is not None
        started = time.monotonic()
        (await _connect(bus, "FR-PN", password)).close()
        assert time.monotonic() - started < refused - 1.0


def _sockets_to(port: int) -> int:
    """How many TCP sockets this process holds to `port` (Linux: `/proc/self/fd` and `net/tcp`)."""
    mine = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if (target := os.readlink(f"/proc/self/fd/{fd}")).startswith("socket:["):
                mine.add(target[len("socket:["):-1])
    count = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            count += int(fields[2].rsplit(":", 1)[1], 16) == port and fields[9] in mine
    return count


@contextlib.asynccontextmanager
async def every_connection_closed(bus: Bus) -> AsyncIterator[None]:
    """The test's connections to the broker are all closed before its event loop ends.

    aiokafka closes a TLS connection whose login was refused in the background; a loop closed
    first leaves the socket to the garbage collector, and a later test gets its ResourceWarning.
    """
    yield
    gc.collect()  # clients dropped without a close (a librdkafka admin) close their sockets now
    port = bus.broker.config.port

    async def sockets() -> int:
        return _sockets_to(port)

    await eventually(sockets, lambda left: left == 0, timeout_s=45)  # a TLS shutdown gets 30 s at most


async def _until_cut(conn: AIOKafkaConnection, *, timeout_s: float) -> float:
    """Send metadata requests on `conn` until the broker closes it; return when that happened."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            await conn.send(MetadataRequest([]))
        except KafkaConnectionError:
            return time.monotonic()
        await asyncio.sleep(0.2)
    raise AssertionError(f"the connection was still open after {timeout_s} s")


async def test_a_rotated_password_stops_an_open_connection_within_the_login_lifetime(bus: Bus) -> None:
    """Rotation leaves open connections working until their login expires; then they are cut and
    a client logging in again with the old password is refused, while the new one works."""
    async with every_connection_closed(bus):
        await _rotate_under_an_open_connection(bus)


async def _rotate_under_an_open_connection(bus: Bus) -> None:
    settings = bus.as_user("DE-BKA")
    old = settings.sasl_password
    assert old is not None
    security = SecurityAdmin(bus.admin())
    assert "DE-BKA" in await security.users_with_credentials(["DE-BKA"])  # the admin is connected
    client = AIOKafkaClient(**settings.kafka_kwargs(), request_timeout_ms=10_000)  # what producers hold
    conn = await _connect(bus, "DE-BKA", old)
    logged_in = time.monotonic()
    try:
        await client.bootstrap()
        node = next(iter(client.cluster.brokers())).nodeId
        await client.send(node, MetadataRequest([]))
        new = new_password()
        await security.set_credentials([Credential("DE-BKA", new)])
        assert time.monotonic() - logged_in < WINDOW_S / 2, "too slow to show the open connection"
        await conn.send(MetadataRequest([]))  # a password is checked at login only: still open
        cut = await _until_cut(conn, timeout_s=WINDOW_S + 15)
        assert WINDOW_S - 1 <= cut - logged_in <= WINDOW_S + 5
        with kafka_client_logs_silenced():  # "Unable connect ... SaslAuthenticationFailed": the point
            refused = 0
            deadline = time.monotonic() + WINDOW_S + 15
            while refused < 3 and time.monotonic() < deadline:  # cut, then refused at each new login
                try:
                    await client.send(node, MetadataRequest([]))
                except (KafkaConnectionError, NodeNotReadyError):
                    refused += 1
                await asyncio.sleep(0.2)
            assert refused == 3
            await client.close()
            with pytest.raises(SaslAuthenticationFailed):
                await _connect(bus, "DE-BKA", old)
    finally:
        conn.close()
        await client.close()
    producer = AIOKafkaProducer(**bus.as_user("DE-BKA", new).kafka_kwargs(), request_timeout_ms=10_000)
    await producer.start()
    try:
        await producer.send_and_wait(settings.topics.outbox("Reply", "DE-BKA"), b"with the new password")
    finally:
        await producer.stop()


async def test_unchanged_credentials_keep_producing_and_consuming_across_login_lifetimes(
        bus: Bus, caplog: pytest.LogCaptureFixture) -> None:
    """aiokafka does not log in again on an open connection: the broker cuts it, aiokafka reconnects.

    An idempotent producer (FR-PN) and a read_committed group consumer (the router) work on for
    four lifetimes with no error reaching the caller, every record read once and in order.
    """
    caplog.set_level(logging.WARNING, logger="aiokafka")
    async with every_connection_closed(bus):
        sent, got = await _produce_and_consume_for(bus, 4 * WINDOW_S)
    assert got == sent
    assert len(sent) > 20
    cuts = [r for r in caplog.records if "KafkaConnectionError" in r.getMessage()]
    assert len(cuts) >= 2  # the broker did cut the connections at least twice meanwhile


async def _produce_and_consume_for(bus: Bus, seconds: float) -> tuple[list[bytes], list[bytes]]:
    """FR-PN sends to its outbox while the router reads it, committing as it goes: (sent, read)."""
    topic, run = Topics().outbox("Alert", "FR-PN"), uuid.uuid4().hex[:8]
    producer = AIOKafkaProducer(**bus.as_user("FR-PN").kafka_kwargs(), enable_idempotence=True, acks="all")
    consumer = AIOKafkaConsumer(topic, **bus.as_user(ROUTER).kafka_kwargs(), group_id=ROUTER,
                                isolation_level="read_committed", auto_offset_reset="earliest",
                                enable_auto_commit=False)
    sent: list[bytes] = []
    got: list[bytes] = []

    async def read() -> None:
        batch = await consumer.getmany(timeout_ms=300)
        got.extend(r.value for records in batch.values() for r in records
                   if r.value is not None and r.value.startswith(run.encode()))
        if batch:
            await consumer.commit()

    await producer.start()
    await consumer.start()
    try:
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            value = f"{run} alert {len(sent)}".encode()
            await asyncio.wait_for(producer.send_and_wait(topic, value), 30)
            sent.append(value)
            await read()
        deadline = time.monotonic() + 30
        while len(got) < len(sent) and time.monotonic() < deadline:
            await read()
    finally:
        await consumer.stop()
        await producer.stop()
    return sent, got
