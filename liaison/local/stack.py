"""`liaison up / down / status`: the local broker plus every bus service, as background processes.

Everything under the run directory is its owner's only (folders 0700, files 0600), and no process
started here gets a password in its command line or environment: services get the path of their
0600 credential file (`LIAISON_CREDENTIALS`).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from liaison.contract import register_all
from liaison.core.settings import CREDENTIALS_VARIABLE, KafkaSettings
from liaison.errors import LocalBrokerError
from liaison.kafka_admin import ConfigChange
from liaison.local import paths
from liaison.local.broker import BrokerConfig, BrokerSecurity, LocalBroker, tail
from liaison.local.cluster import LocalCluster, local_brokers
from liaison.local.process import child_environ, is_alive, read_pid, start_detached, stop_pid
from liaison.policy import load_policy
from liaison.provision import provision
from liaison.registry_client import RegistryClient, basic_auth_header
from liaison.security.acls import DEADLINES, REGISTRY, ROUTER, username
from liaison.security.credentials import (
    ADMIN,
    Credential,
    CredentialFiles,
    Endpoints,
    new_password,
    private_dir,
    write_private,
)
from liaison.security.tls import DevTls

CONNECTION_VARIABLES = frozenset({
    CREDENTIALS_VARIABLE, "LIAISON_BOOTSTRAP_SERVERS", "LIAISON_REGISTRY_URL", "LIAISON_SECURITY_PROTOCOL",
    "LIAISON_SASL_MECHANISM", "LIAISON_SASL_USERNAME", "LIAISON_SASL_PASSWORD", "LIAISON_SSL_CAFILE"})
"""Who a service is and where it connects: set by the stack, never inherited from the caller's shell."""

SECURE_VARIABLE = "LIAISON_LOCAL_SECURE"
"""`false` runs the local stack in plain text (no TLS, no authentication, no ACLs)."""

POLICY_VARIABLE = "LIAISON_POLICY_FILE"
"""The sharing policy the router loads; the stack applies its `audit.retention_days` to `bus.audit`."""
DEFAULT_POLICY = paths.REPO_ROOT / "deploy" / "policy.yaml"


@dataclass(frozen=True)
class ServiceSpec:
    """One bus service as `make up` runs it: `python -m <module>` with its own env and ports."""

    name: str
    module: str
    metrics_port: int
    principal: str

    def pid_file(self, run: Path) -> Path:
        return run / f"{self.name}.pid"

    def log_file(self, run: Path) -> Path:
        return run / "logs" / f"{self.name}.log"


# The order is the start order; stop runs in reverse.
REGISTRY_PORT = 8081
BROKER_METRICS_PORT = 9404
"""The first node's JMX exporter (`deploy/prometheus/prometheus.yml`); node k serves on 9404 + k-1."""
SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("registry", "services.registry", metrics_port=9181, principal=REGISTRY),
    ServiceSpec("router", "services.router", metrics_port=9182, principal=ROUTER),
    ServiceSpec("deadlines", "services.deadlines", metrics_port=9183, principal=DEADLINES),
    # only a super user may delete the ACLs and credential of an officer whose delegation ended
    ServiceSpec("delegations", "services.delegations", metrics_port=9184, principal=ADMIN),
)


def local_secure() -> bool:
    """Whether the local stack runs secured (the default); `LIAISON_LOCAL_SECURE=false` turns it off."""
    value = os.environ.get(SECURE_VARIABLE, "true").strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        raise LocalBrokerError(f"{SECURE_VARIABLE} must be true or false, not {value!r}")
    return value in ("true", "1", "yes", "on")


def local_admin_credentials() -> Path | None:
    """The local admin's credential file, when the operator has named no broker or credential."""
    if any(os.environ.get(v) for v in CONNECTION_VARIABLES):
        return None
    path = CredentialFiles(paths.secrets_dir()).path(ADMIN)
    return path if path.is_file() else None


@dataclass(frozen=True)
class Status:
    name: str
    pid: int | None
    address: str
    log: Path


class LocalStack:
    """The broker and the services of one checkout, found again through their pid files."""

    def __init__(self, broker: BrokerConfig | None = None, run: Path | None = None, *,
                 secure: bool | None = None, registry_port: int = REGISTRY_PORT,
                 metrics_ports: dict[str, int] | None = None, policy_file: Path | None = None,
                 brokers: int | None = None, broker_ports: Sequence[tuple[int, int]] = ()) -> None:
        """Ports other than the defaults let a second stack (a test's) run beside `make up`'s.

        `policy_file` (default `LIAISON_POLICY_FILE`, else `deploy/policy.yaml`) goes to the router,
        and its audit retention to `bus.audit`. `brokers` (default `LIAISON_LOCAL_BROKERS`, else 1)
        nodes are shaped like `broker`, on `broker_ports` (see `liaison.local.cluster`).
        """
        self.run = run or paths.run_dir()
        self.policy_file = (policy_file or Path(os.environ.get(POLICY_VARIABLE) or DEFAULT_POLICY)).absolute()
        self.topic_changes: list[ConfigChange] = []  # what the last `up()` changed on existing topics
        self.registry_port = registry_port
        self._metrics_ports = {spec.name: spec.metrics_port for spec in SERVICES} | (metrics_ports or {})
        self.secure = local_secure() if secure is None else secure
        self.tls = DevTls(self.run / "tls")
        self.files = CredentialFiles(self.run / "secrets")
        self.cluster = LocalCluster.of(broker or BrokerConfig(home=self.run / "kafka",
                                                              jmx_exporter_port=BROKER_METRICS_PORT),
                                       brokers or local_brokers(), ports=broker_ports)
        if self.secure and (admin := self.files.read(ADMIN)) is not None:
            self._secure_broker(admin)

    @property
    def broker(self) -> LocalBroker:
        """The first node (the only one, unless `LIAISON_LOCAL_BROKERS` says otherwise)."""
        return self.cluster.brokers[0]

    def _secure_broker(self, admin: Credential) -> None:
        if self.cluster.first.security is None:
            security = BrokerSecurity(self.tls, admin.password)
            self.cluster = LocalCluster([replace(b.config, security=security) for b in self.cluster.brokers])

    @property
    def registry_url(self) -> str:
        return f"{'https' if self.secure else 'http'}://127.0.0.1:{self.registry_port}"

    def metrics_port(self, spec: ServiceSpec) -> int:
        return self._metrics_ports[spec.name]

    @property
    def endpoints(self) -> Endpoints:
        return Endpoints(self.cluster.bootstrap, self.registry_url, self.tls.ca_cert)

    def _admin(self) -> Credential:
        """The admin's credential: made once, before the broker's storage is formatted with it."""
        existing = self.files.read(ADMIN)
        if existing is not None:
            return existing
        if self.cluster.formatted():
            raise LocalBrokerError(f"the admin's credential file {self.files.path(ADMIN)} is gone but the "
                                   "broker's storage was formatted with it: `make down clean` starts over")
        credential = Credential(ADMIN, new_password())
        self.tls.ensure()
        self.files.write(credential, self.endpoints)
        return credential

    def admin_settings(self) -> KafkaSettings:
        return self.cluster.admin_settings().model_copy(update={"registry_url": self.registry_url})

    def credential_file(self, name: str) -> Path:
        """The credential file of an agency or service, named after its user on this bus (with the
        bus's topic prefix, as onboarding names it)."""
        return self.files.path(username(self.admin_settings().topics, name))

    def agency_settings(self, code: str) -> KafkaSettings:
        """How agency `code` connects: with its own credential file on a secured stack."""
        if not self.secure:
            return self.admin_settings()
        return KafkaSettings(_env_file=self.credential_file(code))  # type: ignore[call-arg]

    def _env(self, spec: ServiceSpec) -> dict[str, str]:
        """The caller's environment minus secrets and connection settings, plus the stack's own."""
        env = child_environ(drop=CONNECTION_VARIABLES)
        env.update({
            "LIAISON_BOOTSTRAP_SERVERS": self.cluster.bootstrap,
            "LIAISON_REGISTRY_URL": self.registry_url,
            "LIAISON_METRICS_PORT": str(self.metrics_port(spec)),
            "LIAISON_REGISTRY_PORT": str(self.registry_port),
            "LIAISON_LOG_JSON": "true",
            "LIAISON_STATE_DIR": str(self.run / "state"),
            POLICY_VARIABLE: str(self.policy_file),
        })
        replication = self.cluster.first.replication  # an operator's own choice stays
        env.setdefault("LIAISON_REPLICATION_FACTOR", str(replication.factor))
        env.setdefault("LIAISON_MIN_INSYNC_REPLICAS", str(replication.min_insync))
        if self.secure:
            env[CREDENTIALS_VARIABLE] = str(self.credential_file(spec.principal))
            if spec.principal == REGISTRY:
                env.update({"LIAISON_REGISTRY_AUTH": "true", "LIAISON_REGISTRY_WRITERS": ADMIN,
                            "LIAISON_REGISTRY_TLS_CERTFILE": str(self.tls.server_cert),
                            "LIAISON_REGISTRY_TLS_KEYFILE": str(self.tls.server_key)})
        return env

    def _check_mode(self) -> None:
        """A broker's storage is formatted for one mode; switching needs a fresh start."""
        mode = "secured" if self.secure else "plain"
        for node in self.cluster.brokers:
            marker = node.config.home / "mode"
            if (node.config.data_dir / "meta.properties").exists():
                was = marker.read_text().strip() if marker.exists() else "plain"  # made before the marker
                if was != mode:
                    raise LocalBrokerError(
                        f"the local broker in {node.config.home} was set up {was}; to run it {mode}, "
                        f"`make down clean` first (this deletes its data), or set {SECURE_VARIABLE}="
                        f"{'true' if was == 'secured' else 'false'}")
            private_dir(marker.parent)
            write_private(marker, mode + "\n")

    def service_pid(self, spec: ServiceSpec) -> int | None:
        return read_pid(spec.pid_file(self.run), must_contain=spec.module)

    def up(self, *, timeout_s: float = 60.0) -> list[Status]:
        """Start what is not running: broker, topics, directory and principals, then each service.

        The admin registers the schemas once the registry answers, before the router starts: on a
        secured bus nobody else may write to the registry.
        """
        policy = load_policy(self.policy_file)  # a wrong policy fails here, not in the router
        private_dir(self.run)
        paths.make_private(self.run)  # a run directory made before it was kept private
        self._check_mode()
        if self.secure:
            self._secure_broker(self._admin())
        self.cluster.start()
        settings = self.admin_settings()
        asyncio.run(self._provision(settings, policy.audit_retention_ms))
        for spec in SERVICES:
            if self.service_pid(spec) is None:
                pid = start_detached(
                    [sys.executable, "-m", spec.module], log_file=spec.log_file(self.run),
                    pid_file=spec.pid_file(self.run), env=self._env(spec), cwd=paths.REPO_ROOT,
                )
                self._wait_ready(spec, pid, timeout_s, settings)
            if spec.principal == REGISTRY:
                asyncio.run(_register_schemas(settings))
        return self.status()

    async def _provision(self, settings: KafkaSettings, audit_retention_ms: int) -> None:
        """Bus topics as settings and policy say (existing ones too), then agencies and principals."""
        done = await provision(settings, audit_retention_ms=audit_retention_ms,
                               credentials=self.files if self.secure else None)
        self.topic_changes = done.configs_changed

    def _wait_ready(self, spec: ServiceSpec, pid: int, timeout_s: float, settings: KafkaSettings) -> None:
        """Each service waits for the one before it (the router needs the registry)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not is_alive(pid):
                raise LocalBrokerError(f"{spec.name} exited during start-up; last lines of "
                                       f"{spec.log_file(self.run)}:\n{tail(spec.log_file(self.run))}")
            ready = registry_answers(settings)[0] if spec.principal == REGISTRY else \
                _answers(f"http://127.0.0.1:{self.metrics_port(spec)}/metrics")
            if ready:
                return
            time.sleep(0.3)
        raise LocalBrokerError(f"{spec.name} did not become ready within {timeout_s:.0f} s; see "
                               f"{spec.log_file(self.run)}")

    def down(self) -> list[str]:
        stopped = []
        for spec in reversed(SERVICES):
            if (pid := self.service_pid(spec)) is not None:
                stop_pid(pid, grace_s=20)
                stopped.append(spec.name)
            spec.pid_file(self.run).unlink(missing_ok=True)
        if self.cluster.stop():
            stopped.append("kafka")
        return stopped

    def status(self) -> list[Status]:
        mode = "SASL_SSL" if self.secure else "PLAINTEXT"
        rows = [Status("kafka" if self.cluster.size == 1 else f"kafka-{node.config.node_id}", node.pid,
                       " ".join([node.config.bootstrap, mode] + ([f"metrics :{port}"] if (
                           port := node.config.jmx_exporter_port) is not None else [])),
                       node.config.log_file)
                for node in self.cluster.brokers]
        rows += [
            Status(spec.name, self.service_pid(spec),
                   " ".join(filter(None, [self.registry_url if spec.principal == REGISTRY else "",
                                          f"metrics :{self.metrics_port(spec)}"])),
                   spec.log_file(self.run))
            for spec in SERVICES
        ]
        return rows


async def _register_schemas(settings: KafkaSettings) -> None:
    async with RegistryClient.from_settings(settings) as client:
        await register_all(client)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):  # noqa: S310  # our own loopback URL
            return True
    except OSError:
        return False


def registry_answers(settings: KafkaSettings) -> tuple[bool, str]:
    """Whether the registry of `settings` lists its subjects to these credentials, and why not."""
    url = settings.registry_url
    if not url.startswith(("http://", "https://")):
        return False, f"LIAISON_REGISTRY_URL is not an http(s) URL: {url}"
    request = urllib.request.Request(f"{url}/subjects")  # noqa: S310  # scheme checked above
    if (auth := settings.basic_auth()) is not None:
        request.add_header("Authorization", basic_auth_header(*auth))
    try:
        with urllib.request.urlopen(request, timeout=3, context=settings.ssl_context()):  # noqa: S310
            return True, url
    except urllib.error.HTTPError as exc:
        return False, f"{url} answered {exc.code} {exc.reason}"
    except OSError:
        return False, f"no answer at {url} - run `make up`"
