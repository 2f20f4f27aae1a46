"""Bus services as real processes, for crash and takeover tests: started here, stopped by pid."""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from liaison.local.process import is_alive, start_detached, stop_pid
from tests.bus_harness import Bus


@dataclass
class ServiceProcess:
    pid: int
    log: Path

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        stop_pid(self.pid, grace_s=5)

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        if is_alive(self.pid):
            self.resume()
            stop_pid(self.pid, grace_s=20)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start_router_process(bus: Bus, workdir: Path, name: str, **env: str) -> ServiceProcess:
    settings = bus.router_settings()
    environment = dict(os.environ)
    environment.update({
        "LIAISON_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "LIAISON_REGISTRY_URL": settings.registry_url,
        "LIAISON_TOPIC_PREFIX": settings.topic_prefix,
        "LIAISON_GROUP_ID": settings.group_id,
        "LIAISON_TRANSACTIONAL_PREFIX": settings.transactional_prefix,
        "LIAISON_SESSION_TIMEOUT_MS": str(settings.session_timeout_ms),
        "LIAISON_METRICS_PORT": "0",
        "LIAISON_LOG_JSON": "true",
        "LIAISON_STATE_DIR": str(workdir / "state"),
    })
    environment.update(env)
    log = workdir / f"{name}.log"
    pid = start_detached([sys.executable, "-m", "services.router"], log_file=log,
                         pid_file=workdir / f"{name}.pid", env=environment,
                         cwd=Path(__file__).resolve().parents[1])
    return ServiceProcess(pid, log)
