"""SCRAM credentials: generated here, handed over once, kept only in files of mode 0600.

A credential file is a dotenv file of `LIAISON_*` settings (broker, registry, CA, user, password),
so a client uses it with `LIAISON_CREDENTIALS=<file>` and nothing else. Passwords never reach a log
line: they travel as `SecretStr` and are read back from the file only by the process that uses them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from liaison.errors import ConfigError

ADMIN = "liaison-admin"
"""The bus's own administrator: the only super user of a secured cluster."""

SCRAM_ITERATIONS = 8192


def new_password() -> SecretStr:
    """192 random bits, URL-safe (safe in JAAS strings, dotenv files and the storage tool's syntax)."""
    return SecretStr(secrets.token_urlsafe(24))


@dataclass(frozen=True)
class Credential:
    username: str
    password: SecretStr

    def __repr__(self) -> str:
        return f"Credential({self.username!r}, '**********')"


@dataclass(frozen=True)
class Endpoints:
    """Where a credential is used: written into each credential file next to the secret."""

    bootstrap_servers: str
    registry_url: str
    ca_file: Path | None  # None: the system's trusted CAs (a cluster with a public certificate)


class CredentialFiles:
    """A directory of credential files, one per principal, readable by their owner only."""

    def __init__(self, home: Path) -> None:
        self.home = home

    def path(self, username: str) -> Path:
        return self.home / f"{username}.env"

    def write(self, credential: Credential, endpoints: Endpoints) -> Path:
        """Write (or replace) the file of `credential`, created with mode 0600 before it holds a secret."""
        private_dir(self.home)
        lines = {
            "LIAISON_BOOTSTRAP_SERVERS": endpoints.bootstrap_servers,
            "LIAISON_REGISTRY_URL": endpoints.registry_url,
            "LIAISON_SECURITY_PROTOCOL": "SASL_SSL",
            "LIAISON_SASL_MECHANISM": "SCRAM-SHA-512",
            **({"LIAISON_SSL_CAFILE": str(endpoints.ca_file)} if endpoints.ca_file is not None else {}),
            "LIAISON_SASL_USERNAME": credential.username,
            "LIAISON_SASL_PASSWORD": credential.password.get_secret_value(),
        }
        path = self.path(credential.username)
        write_private(path, "".join(f"{k}={v}\n" for k, v in lines.items()))
        return path

    def read(self, username: str) -> Credential | None:
        path = self.path(username)
        if not path.exists():
            return None
        values = read_env_file(path)
        password = values.get("LIAISON_SASL_PASSWORD")
        if not password:
            raise ConfigError(f"{path} has no LIAISON_SASL_PASSWORD")
        return Credential(values.get("LIAISON_SASL_USERNAME", username), SecretStr(password))

    def remove(self, username: str) -> bool:
        path = self.path(username)
        existed = path.exists()
        path.unlink(missing_ok=True)
        return existed


def private_dir(path: Path) -> Path:
    """Create `path` and any missing parent with mode 0700, and make `path` itself 0700.

    `mkdir(parents=True, mode=...)` gives the parents the umask's mode, not ours: each missing
    level is made here instead.
    """
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for level in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made by someone else meanwhile
            level.mkdir(mode=0o700)
    os.chmod(path, 0o700)
    return path


def write_private(path: Path, data: str | bytes) -> Path:
    """Write (or replace) a file readable by its owner only: mode 0600 before the first byte.

    The data goes to a fresh temporary file renamed over `path`, so a reader sees the old or the
    new content, and a file that was once group-readable is replaced rather than reused.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data.encode() if isinstance(data, str) else data)
    tmp.replace(path)
    return path


def read_env_file(path: Path) -> dict[str, str]:
    """`KEY=value` lines of a dotenv file (comments and blank lines skipped)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read credentials file {path}: {exc.strerror}") from None
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}
