"""Router settings, from `LIAISON_*` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from liaison.core.settings import StatefulSettings, prefixed_names
from liaison.local.paths import REPO_ROOT
from services.router.limits import Limits


class RouterSettings(StatefulSettings):
    @model_validator(mode="before")
    @classmethod
    def _names_follow_the_prefix(cls, data: Any) -> Any:
        return prefixed_names(data, group_id="liaison-router", transactional_prefix="liaison-router")

    group_id: str = Field(default="liaison-router",
                          description="Consumer group of all router instances (<prefix>liaison-router).")
    transactional_prefix: str = Field(
        default="liaison-router", description="The transactional id is <prefix>.<instance_id>.")
    instance_id: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9._-]{1,64}$",
        description="Stable name of this instance (e.g. a StatefulSet pod); default: host and state "
                    "slot. A restart under the same name aborts its predecessor's open transaction.")
    transaction_timeout_ms: int = Field(
        default=10_000, ge=1000, description="How long a dead instance's open transaction holds its "
                                             "partitions before the broker aborts it.")
    policy_file: Path = Field(default=REPO_ROOT / "deploy" / "policy.yaml")
    directory_file: Path | None = Field(
        default=None, description="If set, publish this directory YAML to bus.directory at start.")
    batch_max_records: int = Field(default=1000, ge=1)
    batch_timeout_ms: int = Field(default=10, ge=1)
    fetch_max_wait_ms: int = Field(
        default=20, ge=1, description="Long-poll wait; short, since a resumed partition waits for it.")
    metadata_max_age_ms: int = Field(default=5000, ge=500, description="How soon new outboxes are seen.")
    session_timeout_ms: int = Field(default=10_000, ge=1000)
    stall_restart_s: float = Field(
        default=60.0, gt=0, description="Records waiting in this instance's outboxes (or a lag it cannot "
                                        "measure) and no transaction committed for this long: the Kafka "
                                        "clients start over: no stuck coordinator stalls routing for good.")
    catch_up_timeout_s: float = Field(
        default=2.0, gt=0, description="How long a batch waits for bus.routed to be read up to date "
                                       "when it holds message ids this instance has not seen.")
    unknown_ref_wait_s: float = Field(
        default=2.0, gt=0, description="How long a record citing a message not seen yet waits (parked, "
                                       "while the records behind it are routed) for it to show.")
    unknown_ref_ttl_s: float = Field(
        default=60.0, ge=0, description="How long a reference that a whole wait did not find is "
                                        "treated as unknown at once (the negative cache).")
    max_parked: int = Field(default=10_000, ge=0,
                            description="Records parked at most; beyond, an unknown reference waits not.")
    state_sweep_interval_s: float = Field(
        default=600.0, gt=0, description="How often expired state entries are looked for and deleted "
                                         "(tombstones in bus.routed and bus.consents).")
    case_group_check_s: float = Field(
        default=30.0, gt=0, description="How often case groups past their end date are looked for, "
                                        "closed, and their members told.")

    # -- what one input may cost (see services/router/limits.py) --------------------------------
    max_record_bytes: int = Field(default=900 * 1024, ge=1024, description="Largest outbox record routed.")
    max_named: int = Field(default=500, ge=1, description="Agencies named (or restricted) in one message.")
    max_groups: int = Field(default=20, ge=0, description="Groups named in one message.")
    max_recipients: int = Field(default=5000, ge=1,
                                description="Recipients of one message after group and broadcast expansion.")
    max_id_length: int = Field(default=128, ge=36, description="Characters of a case id, trace id, "
                                                                "reference or agency/group code.")
    max_output_bytes: int = Field(default=1_000_000, ge=1024,
                                  description="Largest record the router writes (message.max.bytes).")

    def limits(self) -> Limits:
        return Limits(max_record_bytes=self.max_record_bytes, max_named=self.max_named,
                      max_groups=self.max_groups, max_recipients=self.max_recipients,
                      max_id_length=self.max_id_length,
                      max_dead_letter_bytes=self.max_output_bytes - 16 * 1024)
