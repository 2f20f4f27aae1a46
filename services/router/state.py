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


FINAL_OUTCOMES = frozenset({"HIT", "NO_HIT", "REFUSED", "GRANTED"})


def open_query(query: dict[str, Any], requested: list[str], deadline: int) -> dict[str, Any]:
    """The `bus.queries` record of a query just delivered (the deadlines service adds its timers)."""
    env = query["envelope"]
    return {"query_id": env["message_id"], "requester": env["originator"], "requested": requested,
            "kind": query["kind"], "priority": env["priority"], "case_id": env["case_id"],
            "created_at": env["created_at"], "deadline": deadline, "state": "OPEN", "answers": {},
            "reminded": [], "overdue": [], "closed_at": None}


def answered_query(current: dict[str, Any], replier: str, outcome: str, at: int) -> dict[str, Any]:
    """The record after a reply reached the requester; closed once every agency answered finally."""
    updated = {**current, "answers": {**current["answers"], replier: {"outcome": outcome, "at": at}}}
    finals = {agency: a["outcome"] for agency, a in updated["answers"].items()
              if a["outcome"] in FINAL_OUTCOMES}
    if current["state"] == "OPEN" and set(current["requested"]) <= set(finals):
        updated["state"] = "REFUSED" if set(finals.values()) == {"REFUSED"} else "ANSWERED"
        updated["closed_at"] = at
    return updated


def consent_key(message_id: str, requester: str) -> str:
    return f"{message_id}/{requester}"


class RouterState:
    """The RoutingState the policy engine reads, backed by two compacted tables."""

    def __init__(self, settings: KafkaSettings, *, routed_topic: str, consents_topic: str,
                 queries_topic: str) -> None:
        # Routed messages are written once each; this instance's own arrive through put_local,
        # the others' are read when a reply or onward copy cites one not seen yet.
        self.routed = CompactedTable(settings, routed_topic, lazy=True)
        self.consents = CompactedTable(settings, consents_topic)
        self.queries = CompactedTable(settings, queries_topic)
        self._tables = (self.routed, self.consents, self.queries)

    async def start(self) -> None:
        for table in self._tables:
            await table.start()

    async def stop(self) -> None:
        for table in reversed(self._tables):
            await table.stop()

    async def catch_up(self, timeout_s: float) -> bool:
        """Wait until the tables hold everything committed so far (other instances' writes too)."""
        results = [await table.wait_caught_up(timeout_s=timeout_s) for table in self._tables]
        return all(results)

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
