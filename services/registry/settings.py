"""The registry's settings: where it listens, which topic holds the schemas, how long writes may take,
and how much one client may ask of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from liaison.core.settings import ServiceSettings, prefixed_names
from services.registry.compat import CompatibilityLevel
from services.registry.limits import SchemaLimits


class RegistrySettings(ServiceSettings):
    """`LIAISON_REGISTRY_*` on top of the connection and metrics settings every service has."""

    @model_validator(mode="before")
    @classmethod
    def _topic_follows_the_prefix(cls, data: Any) -> Any:
        return prefixed_names(data, registry_topic="_schemas")

    registry_host: str = Field(default="127.0.0.1", description="Address the REST API listens on.")
    registry_port: int = Field(default=8081, ge=0, le=65535, description="REST API port; 0 picks one.")
    registry_topic: str = Field(
        default="_schemas", pattern=r"^[A-Za-z0-9._-]{1,249}$",
        description="Compacted topic that holds every schema and config record (<prefix>_schemas).",
    )
    registry_topic_replication: int | None = Field(
        default=None, ge=1,
        description="Replication factor used when the registry creates its topic; default: the bus's "
                    "rule (LIAISON_REPLICATION_FACTOR, else 3 on three brokers or more).",
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

    # Limits, sized for real schemas: ours are under 12 KB, 210 elements and 13 levels deep.
    registry_max_body_bytes: int = Field(
        default=256 * 1024, ge=1024,
        description="Largest request body, so largest schema, accepted; 413 past it.")
    registry_max_schema_elements: int = Field(
        default=2000, ge=10,
        description="Most JSON objects and array items (types, fields, branches, symbols) in a schema; 422.")
    registry_max_schema_depth: int = Field(
        default=32, ge=4, le=200,
        description="Deepest nesting of JSON objects and arrays in a schema; 422 past it.")
    registry_parse_timeout_s: float = Field(
        default=5.0, gt=0,
        description="How long parsing or checking one submitted schema may take in the worker; 422 past it.")
    registry_parse_workers: int = Field(
        default=1, ge=1, le=32, description="Worker processes that parse and check submitted schemas.")
    registry_parse_max_pending: int = Field(
        default=16, ge=1, description="Parses and checks running or waiting at once; 429 past it.")
    registry_user_requests_per_s: float = Field(
        default=50.0, gt=0, description="Requests a second one user may make in the long run (with auth).")
    registry_user_requests_burst: int = Field(
        default=500, ge=1, description="Requests one user may make at once before the rate applies; 429.")
    registry_failed_login_cache_s: float = Field(
        default=30.0, ge=0,
        description="How long a refused user and password stay refused without asking the broker; 0: off.")
    registry_failed_logins_per_s: float = Field(
        default=0.1, gt=0, description="Failed broker logins a second one address may cause in the long run.")
    registry_failed_logins_burst: int = Field(
        default=10, ge=1, description="Failed broker logins one address may cause at once; 429 past it.")

    @model_validator(mode="after")
    def _pending_covers_workers(self) -> RegistrySettings:
        if self.registry_parse_max_pending < self.registry_parse_workers:
            raise ValueError("LIAISON_REGISTRY_PARSE_MAX_PENDING must be at least "
                             "LIAISON_REGISTRY_PARSE_WORKERS, or some workers would never be used")
        return self

    @property
    def writers(self) -> frozenset[str]:
        return frozenset(w.strip() for w in self.registry_writers.split(",") if w.strip())

    @property
    def schema_limits(self) -> SchemaLimits:
        return SchemaLimits(max_body_bytes=self.registry_max_body_bytes,
                            max_elements=self.registry_max_schema_elements,
                            max_depth=self.registry_max_schema_depth)
