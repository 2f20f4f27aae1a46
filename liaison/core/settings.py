"""Typed settings read from `LIAISON_*` environment variables, validated once at start."""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from liaison.errors import ConfigError
from liaison.local.paths import run_dir
from liaison.topics import Topics

SecurityProtocol = Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"]


class KafkaSettings(BaseSettings):
    """How to reach the broker and the registry; the base of every service's settings."""

    model_config = SettingsConfigDict(env_prefix="LIAISON_", extra="ignore", frozen=True)

    bootstrap_servers: str = Field(
        default="127.0.0.1:9092", description="Kafka bootstrap servers, comma separated."
    )
    registry_url: str = Field(default="http://127.0.0.1:8081", description="Schema registry URL.")
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    client_id: str = "liaison"
    topic_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9._-]*$",
                              description="Prefix of every bus topic (several buses on one cluster).")
    replication_factor: int | None = Field(
        default=None, ge=1,
        description="Replicas of every topic the bus creates; default: 3 on a cluster of three or more "
                    "brokers, else one per broker. Set it in production, so that a topic created while "
                    "a broker is down is not created with fewer.")
    min_insync_replicas: int | None = Field(
        default=None, ge=1,
        description="min.insync.replicas of every topic the bus creates; default: 2 with 3 replicas or "
                    "more, else 1.")

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

    def kafka_kwargs(self) -> dict[str, Any]:
        """Keyword arguments every aiokafka client takes, with security filled in."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol.startswith("SASL"):
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        if self.security_protocol.endswith("SSL"):
            from aiokafka.helpers import create_ssl_context  # noqa: PLC0415  # only when TLS is on

            kwargs["ssl_context"] = create_ssl_context(cafile=self.ssl_cafile)
        return kwargs

    def ssl_context(self) -> ssl.SSLContext | None:
        """TLS trust for HTTPS to the registry: the configured CA, or the system's."""
        if not self.registry_url.startswith("https"):
            return None
        return ssl.create_default_context(cafile=self.ssl_cafile)

    def basic_auth(self) -> tuple[str, str] | None:
        """The registry takes the same user and password as the broker (HTTP basic, over TLS)."""
        if self.sasl_username is None or self.sasl_password is None:
            return None
        return self.sasl_username, self.sasl_password.get_secret_value()

    def safe_dump(self) -> dict[str, Any]:
        """Settings for the start-up log line: secrets masked by pydantic's SecretStr."""
        return {key: str(value) if isinstance(value, SecretStr) else value
                for key, value in self.model_dump().items()}


class ServiceSettings(KafkaSettings):
    """Settings every long-running service has on top of the connection."""

    metrics_port: int = Field(default=0, ge=0, le=65535, description="0 picks a free port.")
    metrics_host: str = "127.0.0.1"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool | None = Field(default=None, description="JSON logs; default: when not a TTY.")


class StatefulSettings(ServiceSettings):
    """A service whose state lives in on-disk stores (`liaison/store.py`)."""

    state_dir: Path = Field(
        default_factory=lambda: run_dir() / "state",
        description="Where this service keeps its state stores (one folder per instance); on a "
                    "persistent volume, a restart reads only what changed since it stopped.")
    instance_id: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9._-]{1,64}$",
        description="Stable name of this instance (e.g. a StatefulSet pod); default: the first free "
                    "slot <service>-N in the state folder.")


S = TypeVar("S", bound=KafkaSettings)


def prefixed_names(data: Any, **defaults: str) -> Any:
    """Before validation: each name not set explicitly (a group, a transactional id, the registry's
    topic) takes the bus's topic prefix, so that buses sharing a cluster share no name, and the
    ACLs made for `<prefix><service>` fit (see liaison.security.acls.username)."""
    if isinstance(data, dict):
        prefix = data.get("topic_prefix") or ""
        for field, default in defaults.items():
            data.setdefault(field, f"{prefix}{default}")
    return data


CREDENTIALS_VARIABLE = "LIAISON_CREDENTIALS"


def load(cls: type[S], *, credentials: Path | None = None, **overrides: Any) -> S:
    """Read settings, turning pydantic's report into one ConfigError an operator can act on.

    `LIAISON_CREDENTIALS` (or `credentials`) names a credential file of `LIAISON_*` lines, as
    onboarding writes them; variables set in the environment win over the file.
    """
    named = os.environ.get(CREDENTIALS_VARIABLE)
    env_file = Path(named) if named else credentials
    if env_file is not None and not env_file.is_file():
        raise ConfigError(f"{CREDENTIALS_VARIABLE}: no credential file at {env_file}")
    try:
        return cls(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        problems = "; ".join(
            f"LIAISON_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None
