"""`liaison up / down / status`: the local broker plus every bus service, as background processes."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from liaison.core.settings import KafkaSettings
from liaison.errors import LocalBrokerError
from liaison.local import paths
from liaison.local.broker import BrokerConfig, LocalBroker, tail
from liaison.local.process import is_alive, read_pid, start_detached, stop_pid
from liaison.provision import provision


@dataclass(frozen=True)
class ServiceSpec:
    """One bus service as `make up` runs it: `python -m <module>` with its own env and ports."""

    name: str
    module: str
    metrics_port: int
    address: str = ""
    env: dict[str, str] = field(default_factory=dict)
    ready_url: str = ""

    def pid_file(self, run: Path) -> Path:
        return run / f"{self.name}.pid"

    def log_file(self, run: Path) -> Path:
        return run / "logs" / f"{self.name}.log"


# The order is the start order; stop runs in reverse.
SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("registry", "services.registry", metrics_port=9181, address="http://127.0.0.1:8081",
                env={"LIAISON_REGISTRY_PORT": "8081"}, ready_url="http://127.0.0.1:8081/subjects"),
    ServiceSpec("router", "services.router", metrics_port=9182,
                ready_url="http://127.0.0.1:9182/metrics"),
    ServiceSpec("deadlines", "services.deadlines", metrics_port=9183,
                ready_url="http://127.0.0.1:9183/metrics"),
)


@dataclass(frozen=True)
class Status:
    name: str
    pid: int | None
    address: str
    log: Path


class LocalStack:
    """The broker and the services of one checkout, found again through their pid files."""

    def __init__(self, broker: BrokerConfig | None = None, run: Path | None = None) -> None:
        self.run = run or paths.run_dir()
        self.broker = LocalBroker(broker or BrokerConfig(home=self.run / "kafka"))

    def _env(self, spec: ServiceSpec) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "LIAISON_BOOTSTRAP_SERVERS": self.broker.config.bootstrap,
            "LIAISON_METRICS_PORT": str(spec.metrics_port),
            "LIAISON_LOG_JSON": "true",
        })
        env.update(spec.env)
        return env

    def service_pid(self, spec: ServiceSpec) -> int | None:
        return read_pid(spec.pid_file(self.run), must_contain=spec.module)

    def up(self, *, timeout_s: float = 60.0) -> list[Status]:
        """Start what is not running: broker, topics and directory, then each service in order."""
        self.broker.start()
        settings = KafkaSettings(bootstrap_servers=self.broker.config.bootstrap)
        asyncio.run(provision(settings))
        for spec in SERVICES:
            if self.service_pid(spec) is None:
                pid = start_detached(
                    [sys.executable, "-m", spec.module], log_file=spec.log_file(self.run),
                    pid_file=spec.pid_file(self.run), env=self._env(spec), cwd=paths.REPO_ROOT,
                )
                self._wait_ready(spec, pid, timeout_s)
        return self.status()

    def _wait_ready(self, spec: ServiceSpec, pid: int, timeout_s: float) -> None:
        """Each service waits for the one before it (the router needs the registry)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not is_alive(pid):
                raise LocalBrokerError(f"{spec.name} exited during start-up; last lines of "
                                       f"{spec.log_file(self.run)}:\n{tail(spec.log_file(self.run))}")
            try:
                with urllib.request.urlopen(spec.ready_url, timeout=2):  # noqa: S310  # our own loopback URL
                    return
            except OSError:
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
        if self.broker.stop():
            stopped.append("kafka")
        return stopped

    def status(self) -> list[Status]:
        rows = [Status("kafka", self.broker.pid, self.broker.config.bootstrap,
                       self.broker.config.log_file)]
        rows += [
            Status(spec.name, self.service_pid(spec),
                   " ".join(filter(None, [spec.address, f"metrics :{spec.metrics_port}"])),
                   spec.log_file(self.run))
            for spec in SERVICES
        ]
        return rows
