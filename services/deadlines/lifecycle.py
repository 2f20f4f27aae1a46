"""The timers of one query, as pure functions of its assembled `bus.queries` record and the time.

The record (assembled by `liaison.query_record` from the keys the router and this service write,
see the README's "Query lifecycle and deadlines") says who was asked, who answered and how, and
which timers already fired (`reminded`, `overdue`, `closed_notified`). From it and `now` this
module says which notices are due and when the next timer falls; the service sends them and writes
the query's timers key with `mark_fired`. No Kafka, no clock: unit-tested in milliseconds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from liaison.query_record import CLOSED_STATES, FINAL_OUTCOMES, OPEN, timers_value

PRIORITIES = ("NORMAL", "HIGH", "URGENT")

EventKind = Literal["REMINDER", "OVERDUE", "CLOSED"]


class MalformedQuery(ValueError):
    """A `bus.queries` record lacks a field the timers need; it is skipped, never guessed at."""


@dataclass(frozen=True, slots=True)
class QueryState:
    """What the timers read from one query's assembled record."""

    query_id: str
    requester: str
    requested: tuple[str, ...]
    priority: str
    case_id: str | None
    created_at: int
    deadline: int
    state: str
    answers: Mapping[str, Mapping[str, Any]]
    reminded: frozenset[str]
    overdue: frozenset[str]
    closed_notified: bool

    @classmethod
    def of(cls, query_id: str, record: Mapping[str, Any]) -> QueryState:
        """Validate the fields the timers use; MalformedQuery names the first one missing or wrong."""
        if not isinstance(record, Mapping):
            raise MalformedQuery(f"query {query_id}: record is {type(record).__name__}, not an object")

        def field(name: str, kind: type | tuple[type, ...], *, optional: bool = False) -> Any:
            value = record.get(name)
            if value is None and optional:
                return None
            if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
                raise MalformedQuery(f"query {query_id}: field {name!r} is {value!r}")
            return value

        requested = field("requested", list)
        answers = field("answers", dict, optional=True) or {}
        for name, items in (("requested", requested), ("reminded", record.get("reminded") or []),
                            ("overdue", record.get("overdue") or [])):
            if not isinstance(items, list) or not all(isinstance(a, str) for a in items):
                raise MalformedQuery(f"query {query_id}: field {name!r} is not a list of agency codes")
        if not all(isinstance(a, dict) for a in answers.values()):
            raise MalformedQuery(f"query {query_id}: field 'answers' holds an answer that is not an object")
        return cls(
            query_id=query_id,
            requester=field("requester", str),
            requested=tuple(dict.fromkeys(requested)),
            priority=str(record.get("priority") or "NORMAL"),
            case_id=field("case_id", str, optional=True),
            created_at=field("created_at", int),
            deadline=field("deadline", int),
            state=field("state", str),
            answers=answers,
            reminded=frozenset(record.get("reminded") or ()),
            overdue=frozenset(record.get("overdue") or ()),
            closed_notified=record.get("closed_notified") is True,
        )

    @property
    def is_open(self) -> bool:
        return self.state == OPEN

    @property
    def final_answers(self) -> frozenset[str]:
        """Agencies whose answer settles their part (anything but PARTIAL)."""
        return frozenset(agency for agency, answer in self.answers.items()
                         if answer.get("outcome") in FINAL_OUTCOMES)

    @property
    def pending(self) -> tuple[str, ...]:
        """Requested agencies that still owe a final answer, in the order they were asked."""
        done = self.final_answers
        return tuple(agency for agency in self.requested if agency not in done)

    def reminder_at(self, share: float) -> int:
        """The reminder instant: `share` of the way from creation to the deadline."""
        return self.created_at + int(share * (self.deadline - self.created_at))


@dataclass(frozen=True, slots=True)
class Event:
    """One timer that fell due: a REMINDER or OVERDUE for `agency`, or CLOSED for the requester."""

    kind: EventKind
    query_id: str
    agency: str
    due_at: int


@dataclass(frozen=True, slots=True)
class Plan:
    due: tuple[Event, ...]
    next_at: int | None  # the next instant something falls due; None: no timer left


@dataclass(frozen=True, slots=True)
class Notice:
    """One receipt to send: who is told (`to`), what, and which agency it is about (`recipient`)."""

    to: str
    kind: EventKind
    recipient: str | None
    reason_code: str | None
    reason: str


def plan(query: QueryState, now_ms: int, share: float) -> Plan:
    """The events due at `now_ms` and the instant of the next one.

    A reminder whose deadline has passed is not sent any more: the overdue notice replaces it.
    """
    if not query.is_open:
        if query.state in CLOSED_STATES and not query.closed_notified:
            return Plan((Event("CLOSED", query.query_id, query.requester, now_ms),), None)
        return Plan((), None)
    remind_at = query.reminder_at(share)
    due: list[Event] = []
    upcoming: list[int] = []
    for agency in query.pending:
        if agency in query.overdue:
            continue
        if now_ms >= query.deadline:
            due.append(Event("OVERDUE", query.query_id, agency, query.deadline))
            continue
        upcoming.append(query.deadline)
        if agency in query.reminded or remind_at >= query.deadline:
            continue
        if now_ms >= remind_at:
            due.append(Event("REMINDER", query.query_id, agency, remind_at))
        else:
            upcoming.append(remind_at)
    return Plan(tuple(due), min(upcoming) if upcoming else None)


def has_timer(query: QueryState) -> bool:
    """Whether anything can still fire for the query: it is open, or closed and not notified yet."""
    return query.is_open or (query.state in CLOSED_STATES and not query.closed_notified)


def mark_fired(query: QueryState, events: Iterable[Event]) -> dict[str, Any]:
    """The value of the query's timers key with `events` recorded on top of those already fired.

    Only the deadlines service writes that key, so the value is built from its view alone.
    """
    reminded, overdue, closed = set(query.reminded), set(query.overdue), query.closed_notified
    for event in events:
        if event.kind == "REMINDER":
            reminded.add(event.agency)
        elif event.kind == "OVERDUE":
            overdue.add(event.agency)
        else:
            closed = True
    return timers_value(sorted(reminded), sorted(overdue), closed)


def notices(query: QueryState, event: Event) -> list[Notice]:
    """Who is told what when `event` fires.

    REMINDER: the requested agency, about the requester. OVERDUE: both sides, about the late
    agency. CLOSED: the requester, with the final state as reason code.
    """
    deadline = _iso(query.deadline)
    if event.kind == "REMINDER":
        return [Notice(event.agency, "REMINDER", query.requester, None,
                       f"{query.requester} awaits your final reply to query {query.query_id} "
                       f"by {deadline}")]
    if event.kind == "OVERDUE":
        return [
            Notice(event.agency, "OVERDUE", event.agency, None,
                   f"the deadline {deadline} of query {query.query_id} from {query.requester} "
                   f"passed without your final reply"),
            Notice(query.requester, "OVERDUE", event.agency, None,
                   f"{event.agency} did not give a final reply to query {query.query_id} "
                   f"by its deadline {deadline}"),
        ]
    outcomes = ", ".join(f"{agency} {query.answers[agency].get('outcome')}"
                         for agency in query.requested if agency in query.answers)
    return [Notice(query.requester, "CLOSED", None, query.state,
                   f"query {query.query_id} is {query.state.lower()}: {outcomes or 'no answers'}")]


def new_final_answers(query: QueryState, seen: frozenset[str]) -> list[tuple[str, int]]:
    """(agency, milliseconds from creation to its final answer) for final answers not in `seen`."""
    found = []
    for agency in sorted(query.final_answers - seen):
        at = query.answers[agency].get("at")
        if isinstance(at, int) and not isinstance(at, bool):
            found.append((agency, max(0, at - query.created_at)))
    return found


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
