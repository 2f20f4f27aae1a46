"""What the router remembers between messages, kept in compacted topics (never in a database).

`bus.routed`: per message id, its type, originator, handling codes, query kind, derived_from, the
agencies it was delivered to, a digest of its bytes, and its restrictions and TLP label.
`bus.consents`: per (H2 message, requester), the provider's consent; per biometric HIT
(`match/<replier>/<reference>`), whether a person at the data owner confirmed it, and the
DATA_REQUESTs held until they do.
`bus.casegroups`: per case group formed on the bus, its members, invitations and history.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from liaison.case_groups import CaseGroup, running_mark
from liaison.core.settings import KafkaSettings
from liaison.policy.model import match_key
from liaison.query_record import answer_key, answer_value
from liaison.store import StateDir
from liaison.table import CompactedTable


def routed_value(message_type: str, originator: str, handling: list[str], delivered: list[str],
                 *, kind: str | None = None, derived_from: str | None = None, digest: str | None = None,
                 restricted: list[str] | None = None, tlp: str | None = None,
                 expires: int | None = None, source: tuple[int, int] | None = None,
                 routed_at: int | None = None, group: str | None = None,
                 categories: list[str] | None = None) -> dict[str, Any]:
    """`s` is a digest of the bytes as sent (a byte-identical re-send is recognised by it); `r` and
    `l` are the message's restrictions and TLP label, which notices about it must honour; `x` is
    when the bus forgets the message; `p` is the outbox partition and offset it was read from, so
    that reading it again (after a crash or a rebalance) is recognised as such; `a` is when it was
    routed (a case group's later members need consent for what came before); `g` the case group a
    query invites to; `c` the biometric categories a HIT_CHECK searched (its HITs need a person's
    confirmation). The last three are written only when set."""
    value = {"t": message_type, "o": originator, "h": handling, "d": delivered, "k": kind,
             "f": derived_from, "s": digest, "r": restricted or [], "l": tlp, "x": expires,
             "p": list(source) if source else None}
    for name, extra in (("a", routed_at), ("g", group), ("c", categories)):
        if extra:
            value[name] = extra
    return value


def open_query(query: dict[str, Any], requested: list[str], deadline: int) -> dict[str, Any]:
    """The base record of a query just delivered, under its id in `bus.queries`; written once.

    Its answers and timers go to keys of their own (see `liaison.query_record`), so that no writer
    ever rewrites another's news.
    """
    env = query["envelope"]
    return {"query_id": env["message_id"], "requester": env["originator"], "requested": requested,
            "kind": query["kind"], "priority": env["priority"], "case_id": env["case_id"],
            "created_at": env["created_at"], "deadline": deadline}


def answered_query(query_id: str, replier: str, outcome: str, at: int) -> tuple[str, dict[str, Any]]:
    """The key and value that record a reply delivered to the requester: the replier's own key."""
    return answer_key(query_id, replier, outcome), answer_value(outcome, at)


def consent_key(message_id: str, requester: str) -> str:
    return f"{message_id}/{requester}"


Lookup = Callable[[str], dict[str, Any] | None]


def overlaid(pending: tuple[Lookup, Lookup, Lookup], committed: tuple[Lookup, Lookup, Lookup], *,
             batch_groups: Callable[[], Iterable[dict[str, Any]]] = tuple,
             run_by: Callable[[str], int] = lambda agency: 0) -> RoutedView:
    """The view of (routed messages, consents and matches, case groups) where a batch's own writes,
    not committed yet (`pending`), stand over what was committed. `batch_groups`: the case groups
    the batch writes; `run_by`: how many groups an agency runs, as committed."""
    def first(mine: Lookup, under: Lookup) -> Lookup:
        return lambda key: found if (found := mine(key)) is not None else under(key)

    def groups_run_by(agency: str) -> int:
        """Committed, plus those the batch proposed (a batch of proposals cannot pass the cap)."""
        fresh = sum(1 for g in batch_groups() if g.get("initiator") == agency and g.get("status") == "ACTIVE"
                    and (committed[2](str(g.get("name"))) or {}).get("status") != "ACTIVE")
        return run_by(agency) + fresh

    routed, consents, groups = (first(a, b) for a, b in zip(pending, committed, strict=True))
    return RoutedView(routed, lambda key: consents(key) is not None, consents, groups, groups_run_by)


class RoutedView:
    """The RoutingState the policy engine reads: lookups of routed messages and consents."""

    def __init__(self, routed: Callable[[str], dict[str, Any] | None],
                 consented: Callable[[str], bool],
                 consent_value: Callable[[str], dict[str, Any] | None] = lambda key: None,
                 case_group: Callable[[str], dict[str, Any] | None] = lambda name: None,
                 run_by: Callable[[str], int] = lambda agency: 0) -> None:
        self._routed = routed
        self._consented = consented
        self._consent_value = consent_value
        self._case_group = case_group
        self._run_by = run_by

    def delivered_to(self, message_id: str) -> frozenset[str] | None:
        entry = self._routed(message_id)
        return None if entry is None else frozenset(entry["d"])

    def originator_of(self, message_id: str) -> str | None:
        entry = self._routed(message_id)
        return None if entry is None else str(entry["o"])

    def handling_of(self, message_id: str) -> tuple[str, frozenset[str]] | None:
        entry = self._routed(message_id)
        return None if entry is None else (str(entry["o"]), frozenset(entry["h"]))

    def has_consent(self, message_id: str, requester: str) -> bool:
        return self._consented(consent_key(message_id, requester))

    def query_kind_of(self, message_id: str) -> str | None:
        entry = self._routed(message_id)
        return None if entry is None or entry["t"] != "Query" else entry["k"]

    def derived_from_of(self, message_id: str) -> str | None:
        entry = self._routed(message_id)
        return None if entry is None else entry.get("f")

    def expiry_of(self, message_id: str) -> int | None:
        """When the bus forgets the message (None: never, for entries written before expiry)."""
        entry = self._routed(message_id)
        return None if entry is None else entry.get("x")

    def routed_at(self, message_id: str) -> int | None:
        entry = self._routed(message_id)
        return None if entry is None else entry.get("a")

    def invitation_of(self, message_id: str) -> str | None:
        """The case group a routed query invites its recipients to."""
        entry = self._routed(message_id)
        return None if entry is None or entry["t"] != "Query" else entry.get("g")

    def categories_of(self, message_id: str) -> list[str]:
        """The biometric categories a routed HIT_CHECK searched."""
        entry = self._routed(message_id)
        return [] if entry is None else list(entry.get("c") or ())

    def case_group(self, name: str) -> CaseGroup | None:
        value = self._case_group(name)
        return None if value is None else CaseGroup.from_value(value)

    def groups_run_by(self, agency: str) -> int:
        """How many case groups formed on the bus `agency` runs now (ACTIVE, it the initiator)."""
        return self._run_by(agency)

    def match(self, replier: str, reference: str) -> dict[str, Any] | None:
        return self._consent_value(match_key(replier, reference))

    def terms_of(self, message_id: str) -> tuple[frozenset[str], str | None] | None:
        """The restrictions and TLP label of a routed message, which notices about it honour."""
        entry = self._routed(message_id)
        return None if entry is None else (frozenset(entry.get("r") or ()), entry.get("l"))


class RouterState(RoutedView):
    """The RoutingState the policy engine reads, backed by compacted tables."""

    def __init__(self, settings: KafkaSettings, *, routed_topic: str, consents_topic: str,
                 casegroups_topic: str | None = None, state_dir: StateDir | None = None) -> None:
        """With `state_dir`, routed messages and consents live on disk, else in memory."""
        # Followed continuously (others' writes too), so that the per-batch check that a new message
        # id is not someone else's costs one ListOffsets round trip, not a read of the backlog.
        self.routed = CompactedTable(settings, routed_topic, fetch_max_wait_ms=10,
                                     store=state_dir.store("routed") if state_dir else None)
        self.consents = CompactedTable(settings, consents_topic,
                                       store=state_dir.store("consents") if state_dir else None)
        self.casegroups = CompactedTable(settings, casegroups_topic or settings.topics.casegroups,
                                         store=state_dir.store("casegroups") if state_dir else None,
                                         mark=running_mark)
        # bus.queries is written, never read: a query's base and each answer have keys of their own.
        self._tables = (self.routed, self.consents, self.casegroups)
        super().__init__(self.routed.items.get, self.consents.items.__contains__, self.consents.items.get,
                         self.casegroups.items.get, self._run_by_committed)

    def _run_by_committed(self, agency: str) -> int:
        return sum(1 for _ in self.casegroups.items.marked(f"{agency}/"))

    def running_groups(self) -> list[dict[str, Any]]:
        """Every group some agency runs (marked ACTIVE). A mark whose group is gone or no longer
        ACTIVE (deleted without ending) is dropped here: nothing is left to tell anyone."""
        items, found, stale = self.casegroups.items, [], []
        for mark in items.marked():
            value = items.get(mark.split("/", 1)[1])
            if isinstance(value, dict) and value.get("status") == "ACTIVE":
                found.append(value)
            else:
                stale.append(mark)
        if stale:
            items.apply({}, marks=dict.fromkeys(stale, False))
        return found

    def overlay(self, routed: Lookup, consents: Lookup, groups: Lookup = lambda name: None,
                batch_groups: Callable[[], Iterable[dict[str, Any]]] = tuple) -> RoutedView:
        """This view with a batch's own writes, not committed yet, on top."""
        return overlaid((routed, consents, groups),
                        (self.routed.items.get, self.consents.items.get, self.casegroups.items.get),
                        batch_groups=batch_groups, run_by=self._run_by_committed)

    async def start(self) -> None:
        """The tables read to their ends side by side: a takeover waits for the slowest, not the sum."""
        started = await asyncio.gather(*(table.start() for table in self._tables), return_exceptions=True)
        failed = [outcome for outcome in started if isinstance(outcome, BaseException)]
        if failed:
            raise failed[0]  # each one started or not, as it would be in turn; stop() ends them

    async def stop(self) -> None:
        for table in reversed(self._tables):
            await table.stop()

    async def catch_up_routed(self, timeout_s: float) -> bool:
        """Wait until the routed-messages table holds everything committed so far."""
        return await self.routed.wait_caught_up(timeout_s=timeout_s)

