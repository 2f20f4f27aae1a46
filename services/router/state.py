"""What the router remembers between messages, kept in compacted topics (never in a database).

`bus.routed`: per message id, its type, originator, handling codes, query kind, derived_from and
the agencies it was delivered to. `bus.consents`: per (H2 message, requester), the provider's consent.
"""

from __future__ import annotations

from typing import Any

from liaison.core.settings import KafkaSettings
from liaison.table import CompactedTable


def routed_value(message_type: str, originator: str, handling: list[str], delivered: list[str],
                 *, kind: str | None = None, derived_from: str | None = None) -> dict[str, Any]:
    return {"t": message_type, "o": originator, "h": handling, "d": delivered, "k": kind,
            "f": derived_from}


def consent_key(message_id: str, requester: str) -> str:
    return f"{message_id}/{requester}"


class RouterState:
    """The RoutingState the policy engine reads, backed by two compacted tables."""

    def __init__(self, settings: KafkaSettings, *, routed_topic: str, consents_topic: str) -> None:
        self.routed = CompactedTable(settings, routed_topic)
        self.consents = CompactedTable(settings, consents_topic)

    async def start(self) -> None:
        await self.routed.start()
        await self.consents.start()

    async def stop(self) -> None:
        await self.consents.stop()
        await self.routed.stop()

    async def catch_up(self, timeout_s: float) -> bool:
        """Wait until both tables hold everything committed so far (other instances' writes too)."""
        return (await self.routed.wait_caught_up(timeout_s=timeout_s)
                and await self.consents.wait_caught_up(timeout_s=timeout_s))

    # -- RoutingState ---------------------------------------------------------------------------
    def delivered_to(self, message_id: str) -> frozenset[str] | None:
        entry = self.routed.items.get(message_id)
        return None if entry is None else frozenset(entry["d"])

    def originator_of(self, message_id: str) -> str | None:
        entry = self.routed.items.get(message_id)
        return None if entry is None else str(entry["o"])

    def handling_of(self, message_id: str) -> tuple[str, frozenset[str]] | None:
        entry = self.routed.items.get(message_id)
        return None if entry is None else (str(entry["o"]), frozenset(entry["h"]))

    def has_consent(self, message_id: str, requester: str) -> bool:
        return consent_key(message_id, requester) in self.consents.items

    def query_kind_of(self, message_id: str) -> str | None:
        entry = self.routed.items.get(message_id)
        return None if entry is None or entry["t"] != "Query" else entry["k"]

    def derived_from_of(self, message_id: str) -> str | None:
        entry = self.routed.items.get(message_id)
        return None if entry is None else entry.get("f")
