"""Deadlines settings, from `LIAISON_*` environment variables."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from liaison.core.settings import StatefulSettings, prefixed_names


class DeadlinesSettings(StatefulSettings):
    """`LIAISON_REMINDER_SHARE`, `LIAISON_TRANSACTIONAL_ID`, ... on top of what every service has."""

    @model_validator(mode="before")
    @classmethod
    def _names_follow_the_prefix(cls, data: Any) -> Any:
        return prefixed_names(data, transactional_id="liaison-deadlines")

    reminder_share: float = Field(
        default=0.75, gt=0, lt=1,
        description="The reminder falls this share of the way from a query's creation to its deadline.")
    transactional_id: str = Field(
        default="liaison-deadlines", min_length=1,
        description="One id for the whole service: a new instance fences the previous one, so one "
                    "instance is active at a time.")
    batch_max_queries: int = Field(
        default=500, ge=1, description="Most queries whose timers are committed in one transaction.")
    catch_up_timeout_s: float = Field(
        default=10.0, gt=0,
        description="How long to wait for bus.queries to be read up to date before firing.")
    retry_backoff_s: float = Field(
        default=1.0, gt=0, description="Pause after a failed transaction before trying again.")
    state_sweep_interval_s: float = Field(
        default=600.0, gt=0, description="How often the keys of queries the bus forgot (their expiry, "
                                         "set by the router from the policy) are deleted from bus.queries.")
    startup_timeout_s: float = Field(
        default=60.0, gt=0, description="How long reading bus.queries to its end may take at start.")
