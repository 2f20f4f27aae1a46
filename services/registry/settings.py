"""The registry's settings: where it listens, which topic holds the schemas, how long writes may take."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from liaison.core.settings import ServiceSettings
from services.registry.compat import CompatibilityLevel


class RegistrySettings(ServiceSettings):
    """`LIAISON_REGISTRY_*` on top of the connection and metrics settings every service has."""

    registry_host: str = Field(default="127.0.0.1", description="Address the REST API listens on.")
    registry_port: int = Field(default=8081, ge=0, le=65535, description="REST API port; 0 picks one.")
    registry_topic: str = Field(
        default="_schemas", pattern=r"^[A-Za-z0-9._-]{1,249}$",
        description="Compacted topic that holds every schema and config record.",
    )
    registry_topic_replication: int = Field(
        default=1, ge=1, description="Replication factor used when the registry creates its topic.",
    )
    registry_default_compatibility: CompatibilityLevel = Field(
        default=CompatibilityLevel.BACKWARD,
        description="Compatibility level while no global level has been set through PUT /config.",
    )
    registry_write_timeout_s: float = Field(
        default=10.0, gt=0, description="How long a write may take to be produced and read back.",
    )
    registry_startup_timeout_s: float = Field(
        default=60.0, gt=0, description="How long reading the topic to its end may take at start.",
    )
    registry_auth: bool = Field(
        default=False, description="Require HTTP basic credentials, checked as a SCRAM login to the broker.")
    registry_writers: str = Field(
        default="liaison-admin", description="Comma-separated users who may register, delete and configure.")
    registry_auth_cache_s: float = Field(
        default=60.0, ge=0, description="How long a checked credential is trusted without asking the broker.")
    registry_tls_certfile: Path | None = Field(
        default=None, description="Serve HTTPS with this certificate chain (PEM); with the key file.")
    registry_tls_keyfile: Path | None = Field(
        default=None, description="The certificate's private key (PEM).")

    @property
    def writers(self) -> frozenset[str]:
        return frozenset(w.strip() for w in self.registry_writers.split(",") if w.strip())
