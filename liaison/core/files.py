"""Reading the bus's configuration files (directory, policy, deadlines) with one kind of error."""

from __future__ import annotations

from pathlib import Path

from liaison.errors import ConfigError


def read_config(path: str | Path, what: str) -> str:
    """The text of a configuration file, or a ConfigError naming `what` and the path."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {path}: {exc.strerror}") from None
