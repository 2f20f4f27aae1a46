"""The legal answer deadlines of requests, from `deploy/deadlines.yaml` (Directive 2023/977)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from liaison.core.files import read_config
from liaison.errors import ConfigError
from liaison.local.paths import REPO_ROOT

DEFAULT_FILE = REPO_ROOT / "deploy" / "deadlines.yaml"
_UNITS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"^\s*(\d+)\s*([mhd])\s*$")


def parse_duration(text: object, where: str) -> int:
    """`8h`, `3d`, `90m` -> milliseconds."""
    match = _DURATION.match(str(text))
    if not match:
        raise ConfigError(f"{where}: {text!r} is not a duration like 8h, 3d or 90m")
    return int(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True)
class DeadlineTable:
    urgent_direct_ms: int = 8 * 3_600_000
    urgent_indirect_ms: int = 3 * 86_400_000
    ordinary_ms: int = 7 * 86_400_000

    def legal(self, priority: str, accessibility: str, received_ms: int) -> int:
        """The latest instant a request received at `received_ms` may be answered."""
        if priority == "URGENT":
            span = self.urgent_direct_ms if accessibility == "DIRECT" else self.urgent_indirect_ms
        else:
            span = self.ordinary_ms
        return received_ms + span

    def stamp(self, priority: str, accessibility: str, received_ms: int, requested: int | None) -> int:
        """The effective deadline: the requester's if shorter, else the legal one."""
        legal = self.legal(priority, accessibility, received_ms)
        return legal if requested is None else min(requested, legal)

    @classmethod
    def from_file(cls, path: Path) -> DeadlineTable:
        try:
            raw = yaml.safe_load(read_config(path, "deadlines")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        urgent = raw.get("urgent") or {}
        base = cls()
        return cls(
            urgent_direct_ms=parse_duration(urgent.get("direct", "8h"), f"{path}: urgent.direct"),
            urgent_indirect_ms=parse_duration(urgent.get("indirect", "3d"), f"{path}: urgent.indirect"),
            ordinary_ms=parse_duration(raw.get("ordinary", "7d"), f"{path}: ordinary")
            if "ordinary" in raw else base.ordinary_ms,
        )


@lru_cache(maxsize=1)
def default_table() -> DeadlineTable:
    return DeadlineTable.from_file(DEFAULT_FILE) if DEFAULT_FILE.exists() else DeadlineTable()
