"""A single-node Apache Kafka in KRaft mode (broker and controller in one JVM), run from jars.

It does what Kafka's own `bin/kafka-storage.sh format` and `bin/kafka-server-start.sh` do:
`kafka.tools.StorageTool` formats the storage once, `kafka.Kafka` runs the server. No secret
reaches a command line or an environment: the admin's password goes to the storage tool in a
0600 `@argfile` and to the broker in its 0600 `server.properties`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import random
import shutil
import socket
import subprocess
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from liaison.core.logs import kafka_client_logs_silenced
from liaison.core.settings import KafkaSettings
from liaison.errors import LocalBrokerError
from liaison.local import paths
from liaison.local.process import PRIVATE_UMASK, child_environ, read_pid, start_detached, stop_pid
from liaison.replication import Replication
from liaison.security.credentials import ADMIN, private_dir, write_private
from liaison.security.tls import DevTls

MAIN_CLASS = "kafka.Kafka"
REAUTH = "connections.max.reauth.ms"


_HANDED_OUT: set[int] = set()


def _ephemeral_floor() -> int:
    """The lowest port the OS gives outgoing connections (Linux: ip_local_port_range)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now, for a server started a moment later (good enough for tests on one machine).

    Taken below the range the OS picks client ports from, so that no outgoing connection takes it
    between this check and the server's bind, and never handed out twice by this process."""
    floor = _ephemeral_floor()
    for _ in range(500):
        port = random.randint(max(1024, floor - 12_000), floor - 1)  # not a secret
        if port in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # a crowded host: let the OS pick
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def java_major_version(java: str = "java") -> int | None:
    """The major version of `java`, or None when there is no Java on PATH."""
    if shutil.which(java) is None:
        return None
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False,
                         env=child_environ(drop_prefixes=("LIAISON_",))).stderr
    for token in out.replace('"', " ").split():
        head = token.split(".")[0]
        if head.isdigit() and "." in token:
            return int(head) if head != "1" else int(token.split(".")[1])
    return None


class BrokerLimits(BaseSettings):
    """How long a login lasts and how many connections the broker takes (`LIAISON_BROKER_*`).

    The defaults suit one machine, where every agency, service and test connects from 127.0.0.1;
    a deployment lowers `max_connections_per_ip` to what one agency needs (and raises it for the
    router's and registry's hosts with `max_connections_per_ip_overrides`).
    """

    model_config = SettingsConfigDict(env_prefix="LIAISON_BROKER_", extra="ignore", frozen=True)

    reauth_ms: int = Field(
        default=3_600_000, ge=0,
        description="connections.max.reauth.ms of the SASL listener: a login lasts at most this "
                    "long; a connection not logged in again is closed at its next request (0: forever).")
    max_connections_per_ip: int = Field(
        default=2_000, ge=1, description="max.connections.per.ip: open connections from one address.")
    max_connections_per_ip_overrides: str = Field(
        default="", pattern=r"^([A-Za-z0-9.:_-]+:\d+(,[A-Za-z0-9.:_-]+:\d+)*)?$",
        description="max.connections.per.ip.overrides: `host:count,host:count`.")
    max_connections: int = Field(
        default=10_000, ge=1, description="max.connections: open connections to the broker in all.")
    failed_auth_delay_ms: int = Field(
        default=1_000, ge=0, le=60_000,
        description="connection.failed.authentication.delay.ms: a refused login is answered this late "
                    "(slows password guessing).")


def broker_limits() -> BrokerLimits:
    """`BrokerLimits` from the environment; a bad value fails in one line naming the variable."""
    try:
        return BrokerLimits()
    except ValidationError as exc:
        problems = "; ".join(f"LIAISON_BROKER_{'_'.join(map(str, err['loc'])).upper()}: {err['msg']}"
                             for err in exc.errors())
        raise LocalBrokerError(f"invalid broker settings: {problems}") from None


@dataclass(frozen=True)
class BrokerSecurity:
    """A secured broker: SASL/SCRAM-SHA-512 over TLS, ACLs denying by default, one super user."""

    tls: DevTls
    admin_password: SecretStr
    admin: str = ADMIN


@dataclass(frozen=True)
class BrokerConfig:
    """Where and how the local broker runs; defaults are those of `make up`."""

    home: Path = field(default_factory=lambda: paths.run_dir() / "kafka")
    host: str = "127.0.0.1"
    port: int = 9092
    controller_port: int = 9093
    heap_mb: int = 512
    jars: Path = field(default_factory=paths.kafka_jars_dir)
    extra_properties: tuple[tuple[str, str], ...] = ()
    security: BrokerSecurity | None = None
    limits: BrokerLimits = field(default_factory=broker_limits)
    jmx_exporter_port: int | None = None  # serve the broker's JMX metrics to Prometheus on this port
    node_id: int = 1
    voters: tuple[tuple[int, str, int], ...] = ()
    """The controller quorum as (node id, host, controller port); empty: this node alone."""
    replication: Replication = field(default_factory=lambda: Replication.for_cluster(1))
    """Of the broker's internal topics and its defaults (`liaison.replication`)."""

    @property
    def quorum(self) -> tuple[tuple[int, str, int], ...]:
        return self.voters or ((self.node_id, self.host, self.controller_port),)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def admin_settings(self) -> KafkaSettings:
        """How the bus's admin reaches this broker (plain settings when it is not secured)."""
        if self.security is None:
            return KafkaSettings(bootstrap_servers=self.bootstrap, security_protocol="PLAINTEXT")
        return KafkaSettings(
            bootstrap_servers=self.bootstrap, security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
            sasl_username=self.security.admin, sasl_password=self.security.admin_password,
            ssl_cafile=str(self.security.tls.ca_cert))

    @property
    def properties_file(self) -> Path:
        return self.home / "server.properties"

    @property
    def pid_file(self) -> Path:
        return self.home / "kafka.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "kafka.log"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"


def server_properties(cfg: BrokerConfig) -> dict[str, str]:
    """KRaft combined mode on loopback, sized to start fast on two cores."""
    props = {
        "process.roles": "broker,controller",
        "node.id": str(cfg.node_id),
        "controller.quorum.voters": ",".join(f"{node}@{host}:{port}" for node, host, port in cfg.quorum),
        "listeners": f"PLAINTEXT://{cfg.host}:{cfg.port},CONTROLLER://{cfg.host}:{cfg.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{cfg.host}:{cfg.port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(cfg.data_dir),
        "num.partitions": "1",
        "auto.create.topics.enable": "false",
        **cfg.replication.broker_properties(),
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.num.partitions": "4",
        "group.initial.rebalance.delay.ms": "0",
        "num.network.threads": "2",
        "num.io.threads": "4",
        "log.retention.hours": "168",
        "log.segment.bytes": str(64 * 1024 * 1024),
        "transaction.abort.timed.out.transaction.cleanup.interval.ms": "5000",
        "transaction.remove.expired.transaction.cleanup.interval.ms": "60000",
        "max.connections.per.ip": str(cfg.limits.max_connections_per_ip),
        "max.connections": str(cfg.limits.max_connections),
    }
    if cfg.limits.max_connections_per_ip_overrides:
        props["max.connections.per.ip.overrides"] = cfg.limits.max_connections_per_ip_overrides
    if cfg.security is not None:
        props.update(secured_properties(cfg, cfg.security))
    props.update(dict(cfg.extra_properties))
    return props


def jmx_exporter_options(cfg: BrokerConfig) -> tuple[str, ...]:
    """The `-javaagent` option that serves the broker's MBeans at http://host:port/metrics, if wanted."""
    if cfg.jmx_exporter_port is None:
        return ()
    return (f"-javaagent:{paths.jmx_exporter_agent()}="
            f"{cfg.host}:{cfg.jmx_exporter_port}:{paths.jmx_exporter_config()}",)


def secured_properties(cfg: BrokerConfig, sec: BrokerSecurity) -> dict[str, str]:
    """SCRAM over TLS for every client; the loopback controller listener authenticates with PLAIN.

    KRaft keeps SCRAM credentials in the metadata log the controller itself serves, so the
    controller listener cannot use SCRAM: a static PLAIN user (the admin) guards it instead of
    leaving it anonymous. `StandardAuthorizer` denies whatever no ACL allows.

    A SCRAM login lasts `reauth_ms`: then the broker closes the connection at its next request
    unless the client logged in again, so a rotated or deleted credential stops an open connection
    within that time (aiokafka does not log in again on an open connection: it reconnects).
    """
    password = sec.admin_password.get_secret_value()
    plain = (f'org.apache.kafka.common.security.plain.PlainLoginModule required username="{sec.admin}" '
             f'password="{password}" user_{sec.admin}="{password}";')
    scram = (f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{sec.admin}" '
             f'password="{password}";')
    return {
        "listeners": f"SASL_SSL://{cfg.host}:{cfg.port},CONTROLLER://{cfg.host}:{cfg.controller_port}",
        "advertised.listeners": f"SASL_SSL://{cfg.host}:{cfg.port}",
        "inter.broker.listener.name": "SASL_SSL",
        "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:SASL_PLAINTEXT",
        "sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": scram,
        f"listener.name.sasl_ssl.scram-sha-512.{REAUTH}": str(cfg.limits.reauth_ms),
        "connection.failed.authentication.delay.ms": str(cfg.limits.failed_auth_delay_ms),
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config": plain,
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(sec.tls.server_bundle),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(sec.tls.ca_cert),
        "ssl.client.auth": "none",
        "ssl.endpoint.identification.algorithm": "https",
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": f"User:{sec.admin}",
    }


class LocalBroker:
    """Format, start, wait for, and stop one local broker; the pid file makes it findable later."""

    def __init__(self, config: BrokerConfig | None = None) -> None:
        self.config = config or BrokerConfig()

    # -- checks ---------------------------------------------------------------------------------
    def check_prerequisites(self) -> None:
        major = java_major_version()
        if major is None:
            raise LocalBrokerError("Java not found on PATH: install a JDK 17+ (apt-get install "
                                   "openjdk-17-jre-headless)")
        if major < 17:
            raise LocalBrokerError(f"Java {major} found, Kafka 4 needs 17+: install a newer JDK")
        if not any(self.config.jars.glob("kafka_2.13-*.jar")):
            raise LocalBrokerError(f"Kafka jars missing in {self.config.jars}: run `make kafka`")
        if self.config.jmx_exporter_port is not None and not paths.jmx_exporter_agent().is_file():
            raise LocalBrokerError(f"JMX exporter agent missing at {paths.jmx_exporter_agent()}: "
                                   "run `make kafka`")

    def _classpath(self) -> str:
        return str(self.config.jars / "*")

    def _java_options(self, *extra: str) -> list[str]:
        return [
            "java", f"-Xmx{self.config.heap_mb}m", f"-Xms{min(self.config.heap_mb, 256)}m",
            "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={paths.kafka_log4j_config()}",
            f"-Dkafka.logs.dir={self.config.home}", *extra,
            "-cp", self._classpath(),
        ]

    def _java(self, main: str, *args: str) -> list[str]:
        """The server's command line (the storage tool runs without the exporter's agent)."""
        return [*self._java_options(*jmx_exporter_options(self.config)), main, *args]

    @staticmethod
    def _environ() -> dict[str, str]:
        """The JVM needs none of the bus's settings (and none of the caller's secrets)."""
        return child_environ(drop_prefixes=("LIAISON_",))

    @contextlib.contextmanager
    def _argfile(self, *args: str) -> Iterator[Path]:
        """A Java `@argfile` of `args` in the broker's 0700 home, mode 0600, deleted on the way out."""
        path = self.config.home / f".args-{uuid.uuid4().hex}"
        try:
            write_private(path, argfile_text(args))
            yield path
        finally:
            path.unlink(missing_ok=True)

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return read_pid(self.config.pid_file, must_contain=str(self.config.properties_file))

    def write_properties(self) -> None:
        """server.properties, mode 0600: a secured one holds the admin's password in its JAAS lines."""
        private_dir(self.config.home)
        if self.config.security is not None:
            self.config.security.tls.ensure()
        text = "".join(f"{k}={v}\n" for k, v in server_properties(self.config).items())
        write_private(self.config.properties_file, text)

    def format_storage(self, cluster_id: str | None = None) -> bool:
        """Format the storage with `cluster_id` (default: a random one), once; True if it did now.

        Every node of a cluster is formatted with the same id.

        The storage tool's arguments, the admin's password among them, are read by the Java
        launcher from an `@argfile` (0600, deleted at once), so the command line shows only its
        path; `-XX:-UsePerfData` keeps the JVM from copying them into `/tmp/hsperfdata_*`.
        """
        if (self.config.data_dir / "meta.properties").exists():
            return False
        cluster_id = cluster_id or new_cluster_id()
        args = ["format", "-t", cluster_id, "-c", str(self.config.properties_file)]
        if (sec := self.config.security) is not None:  # the admin's SCRAM credential, from the start
            args += ["--add-scram", f"SCRAM-SHA-512=[name={sec.admin},"
                                    f"password={sec.admin_password.get_secret_value()}]"]
        with self._argfile("kafka.tools.StorageTool", *args) as argfile:
            result = subprocess.run(
                [*self._java_options("-XX:-UsePerfData", "-XX:+DisableAttachMechanism"), f"@{argfile}"],
                capture_output=True, text=True, check=False, env=self._environ(), umask=PRIVATE_UMASK)
        if result.returncode != 0:
            out = f"{result.stdout}{result.stderr}"
            if sec is not None:
                out = out.replace(sec.admin_password.get_secret_value(), "**********")
            raise LocalBrokerError(f"formatting Kafka storage failed: {out}")
        return True

    def start(self, *, timeout_s: float = 60.0) -> int:
        """Start the broker unless it already runs; return its pid once it answers metadata."""
        if (pid := self.pid) is not None:
            return pid
        pid = self.launch()
        self.wait_ready(pid, timeout_s=timeout_s)
        return pid

    def launch(self, *, cluster_id: str | None = None) -> int:
        """Start the process unless it runs, without waiting: a node of a cluster answers only once
        a majority of the controllers runs, so a cluster launches every node first."""
        if (pid := self.pid) is not None:
            return pid
        self.check_prerequisites()
        self.write_properties()
        self.format_storage(cluster_id)
        return start_detached(
            self._java(MAIN_CLASS, str(self.config.properties_file)),
            log_file=self.config.log_file, pid_file=self.config.pid_file, env=self._environ(),
        )

    def wait_ready(self, pid: int, *, timeout_s: float) -> None:
        """Until this node answers metadata; at the deadline it is stopped and its log shown."""
        try:
            wait_until_ready(self.config.admin_settings(), timeout_s=timeout_s, pid=pid)
        except LocalBrokerError as exc:
            stop_pid(pid, grace_s=5)
            raise LocalBrokerError(f"{exc}\n--- last lines of {self.config.log_file} ---\n"
                                   f"{tail(self.config.log_file)}") from None

    def stop(self, *, grace_s: float = 30.0) -> bool:
        """Stop the broker we started (by its pid). Returns False when none was running."""
        pid = self.pid
        if pid is None:
            self.config.pid_file.unlink(missing_ok=True)
            return False
        stop_pid(pid, grace_s=grace_s)
        self.config.pid_file.unlink(missing_ok=True)
        return True


def new_cluster_id() -> str:
    """A random KRaft cluster id (base64 of a UUID) that never starts with '-', read as an option."""
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    return "L" + cluster_id[1:] if cluster_id.startswith("-") else cluster_id


def argfile_text(args: tuple[str, ...] | list[str]) -> str:
    """Arguments as the Java launcher reads an `@argfile`: one per line, each in double quotes.

    Inside quotes the launcher treats a backslash as an escape, so arguments holding a quote,
    a backslash or a line break are refused rather than escaped (none of ours has them: passwords
    are URL-safe).
    """
    for arg in args:
        if any(c in arg for c in '"\\\n\r'):
            raise LocalBrokerError("an argument for the Java launcher holds a quote, a backslash or a "
                                   "line break")
    return "".join(f'"{arg}"\n' for arg in args)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


async def brokers_seen(settings: KafkaSettings, *, timeout_s: float = 5.0) -> int:
    """How many brokers the cluster's metadata lists, asked within timeout_s (0: no answer)."""
    from aiokafka import AIOKafkaClient  # noqa: PLC0415  # keeps `liaison --help` fast

    client = AIOKafkaClient(**settings.kafka_kwargs(), request_timeout_ms=int(timeout_s * 1000))
    with kafka_client_logs_silenced():  # "Unable connect" is expected while polling
        try:
            await asyncio.wait_for(client.bootstrap(), timeout_s)
        except Exception:  # noqa: BLE001  # any failure to bootstrap means "not answering yet"
            return 0
        else:
            return len(client.cluster.brokers())
        finally:
            await client.close()


async def broker_answers(settings: KafkaSettings, *, timeout_s: float = 5.0) -> bool:
    """True if the broker answers a metadata request within timeout_s (authenticated if secured)."""
    return await brokers_seen(settings, timeout_s=timeout_s) > 0


def wait_until_ready(settings: KafkaSettings, *, timeout_s: float, pid: int | None = None,
                     brokers: int = 1) -> None:
    """Poll until the metadata lists `brokers` brokers; fail clearly at the deadline."""
    from liaison.local.process import is_alive  # noqa: PLC0415

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pid is not None and not is_alive(pid):
            raise LocalBrokerError(f"the broker process {pid} exited during start-up")
        with warnings.catch_warnings():
            # aiokafka can drop a half-open TLS connection when the broker refuses a login during its
            # start-up; the socket is collected here, not reported later as someone else's leak.
            warnings.simplefilter("ignore", ResourceWarning)
            seen = asyncio.run(brokers_seen(settings, timeout_s=2.0))
            gc.collect()
        if seen >= brokers:
            return
        time.sleep(0.3)
    raise LocalBrokerError(f"{brokers} broker(s) did not answer at {settings.bootstrap_servers} within "
                           f"{timeout_s:.0f} s")
