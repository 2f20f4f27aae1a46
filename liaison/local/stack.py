"""`liaison up / down / status`: the local broker plus every bus service, as background processes."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from liaison.local import paths
from liaison.local.broker import BrokerConfig, LocalBroker
from liaison.local.process import read_pid, start_detached, stop_pid


@dataclass(frozen=True)
class ServiceSpec:
    """One bus service as `make up` runs it: `python -m <module>` with its own env and ports."""

    name: str
    module: str
    metrics_port: int
    address: str = ""
    env: dict[str, str] = field(default_factory=dict)

    def pid_file(self, run: Path) -> Path:
        return run / f"{self.name}.pid"

    def log_file(self, run: Path) -> Path:
        return run / "logs" / f"{self.name}.log"


# The order is the start order; stop runs in reverse.
SERVICES: tuple[ServiceSpec, ...] = ()


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

    def up(self) -> list[Status]:
        self.broker.start()
        for spec in SERVICES:
            if self.service_pid(spec) is None:
                start_detached(
                    [sys.executable, "-m", spec.module], log_file=spec.log_file(self.run),
                    pid_file=spec.pid_file(self.run), env=self._env(spec), cwd=paths.REPO_ROOT,
                )
        return self.status()

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
