"""Router settings, from `LIAISON_*` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from liaison.core.settings import ServiceSettings
from liaison.local.paths import REPO_ROOT


class RouterSettings(ServiceSettings):
    group_id: str = Field(default="liaison-router", description="Consumer group of all router instances.")
    transactional_prefix: str = Field(
        default="liaison-router", description="Transactional ids are <prefix>.<topic>.<partition>.")
    policy_file: Path = Field(default=REPO_ROOT / "deploy" / "policy.yaml")
    directory_file: Path | None = Field(
        default=None, description="If set, publish this directory YAML to bus.directory at start.")
    batch_max_records: int = Field(default=1000, ge=1)
    batch_timeout_ms: int = Field(default=50, ge=1)
    fetch_max_wait_ms: int = Field(
        default=20, ge=1, description="Long-poll wait; short, since a resumed partition waits for it.")
    metadata_max_age_ms: int = Field(default=5000, ge=500, description="How soon new outboxes are seen.")
    session_timeout_ms: int = Field(default=10_000, ge=1000)
    catch_up_timeout_s: float = Field(default=2.0, gt=0,
                                      description="How long to wait for the state view on an unknown id.")
