"""Where the local stack keeps its jars, data, logs and pid files (all ignored by git)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_dir() -> Path:
    """Data, logs and pid files of the local stack; `LIAISON_RUN_DIR` moves it."""
    return Path(os.environ.get("LIAISON_RUN_DIR", REPO_ROOT / ".run"))


def kafka_jars_dir() -> Path:
    """The broker's jars, copied from Maven Central by `make kafka`."""
    return Path(os.environ.get("LIAISON_KAFKA_JARS", REPO_ROOT / ".cache" / "kafka" / "jars"))


def kafka_log4j_config() -> Path:
    return REPO_ROOT / "deploy" / "kafka" / "log4j2.properties"


def jmx_exporter_agent() -> Path:
    """The Prometheus JMX exporter's Java agent, copied by `make kafka` apart from the broker's jars."""
    return Path(os.environ.get("LIAISON_KAFKA_AGENTS", REPO_ROOT / ".cache" / "kafka" / "agents"),
                "jmx_prometheus_javaagent.jar")


def jmx_exporter_config() -> Path:
    """Which MBeans the broker's JMX exporter serves, and under which metric names."""
    return REPO_ROOT / "deploy" / "kafka" / "jmx-exporter.yaml"


def secrets_dir() -> Path:
    """Credential files of the local stack (mode 0700, each file 0600)."""
    return run_dir() / "secrets"


def tls_dir() -> Path:
    """The local development CA and the server certificate it signed."""
    return run_dir() / "tls"


def make_private(root: Path) -> int:
    """Take group and other permissions off everything under `root` (itself included).

    For a run directory made before it was kept private: what the stack creates now is 0700/0600
    from the start. Symbolic links are left alone. Returns how many entries changed.
    """
    changed = 0
    for top, dirs, files in os.walk(root):
        for path in [Path(top), *(Path(top) / name for name in dirs + files)]:
            try:
                info = path.lstat()
                if stat.S_ISLNK(info.st_mode) or not stat.S_IMODE(info.st_mode) & 0o077:
                    continue
                path.chmod(stat.S_IMODE(info.st_mode) & 0o700)
            except FileNotFoundError:  # the broker deletes segments as it goes
                continue
            changed += 1
    return changed
