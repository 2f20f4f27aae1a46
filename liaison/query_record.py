"""The layout of `bus.queries`: several keys per query, each with one writer, and the one function
that assembles them into the record every reader uses.

- `<query_id>`: the base (`query_id`, `requester`, `requested`, `kind`, `priority`, `case_id`,
  `created_at`, `deadline`), written once by the router in the transaction that delivers the query;
- `<query_id>/answer/<AGENCY>`: `{"outcome", "at"}`, that agency's final answer, written by the
  router in the transaction that delivers the reply;
- `<query_id>/partial/<AGENCY>`: the same for a PARTIAL reply;
- `<query_id>/timers`: `{"reminded", "overdue", "closed_notified"}`, written only by the deadlines
  service (one active instance, fenced by its transactional id).

Why: replies to one query arrive on the outboxes of many agencies, which two router instances may
share, while the deadlines service fires the query's timers. When each of them rewrote one whole
record from its own view, the last write dropped the others' news (answers lost, a query never
closed, overdue notices to agencies that had answered). With one writer per key no write can drop
another's, and nobody has to read before writing. The query's state (OPEN, ANSWERED, REFUSED) and
`closed_at` are not stored anywhere: `assemble` derives them from the parts, for every reader.

A PARTIAL reply has a key of its own so that it can never overwrite a final answer. A later final
reply of the same agency replaces its earlier one: the state follows the latest final answers.

Query ids are canonical UUIDs (the router refuses others) and agency codes hold no `/`, so a
query's keys are contiguous in key order and `query_id_of` finds the query of any key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

OPEN = "OPEN"
ANSWERED = "ANSWERED"
REFUSED = "REFUSED"
CLOSED_STATES = frozenset({ANSWERED, REFUSED})
"""States in which the requester is told once that its query is closed."""
FINAL_OUTCOMES = frozenset({"HIT", "NO_HIT", "REFUSED", "GRANTED"})
"""Every reply outcome but PARTIAL settles the requested agency's duty to answer."""

_ANSWER, _PARTIAL, _TIMERS = "answer", "partial", "timers"

Lookup = Callable[[str], Any]
"""The value of one key of `bus.queries`, or None: the only way the table is read here."""


def answer_key(query_id: str, agency: str, outcome: str) -> str:
    """Where the router records an agency's reply: final answers and PARTIAL ones apart."""
    return f"{query_id}/{_ANSWER if outcome in FINAL_OUTCOMES else _PARTIAL}/{agency}"


def answer_value(outcome: str, at: int) -> dict[str, Any]:
    return {"outcome": outcome, "at": at}


def timers_key(query_id: str) -> str:
    return f"{query_id}/{_TIMERS}"


def timers_value(reminded: list[str], overdue: list[str], closed_notified: bool) -> dict[str, Any]:
    return {"reminded": reminded, "overdue": overdue, "closed_notified": closed_notified}


def query_id_of(key: str) -> str:
    """The query a key of `bus.queries` belongs to."""
    return key.split("/", 1)[0]


def open_mark(key: str, value: Any) -> tuple[str, bool] | None:
    """Which query a change opens or settles, for the deadlines service's index of queries that
    still have a timer: a base (or a record in the single-record shape) opens its query until a
    timers value says the requester was told it closed; a deleted base settles it."""
    query_id, _, part = key.partition("/")
    if part and part != _TIMERS:
        return None
    notified = isinstance(value, Mapping) and value.get("closed_notified") is True
    if part:  # the timers key
        return (query_id, False) if notified else None
    return query_id, value is not None and not notified


def is_final(answer: Any) -> TypeGuard[Mapping[str, Any]]:
    """Whether a stored answer settles its agency's duty to answer (anything but PARTIAL)."""
    return isinstance(answer, Mapping) and answer.get("outcome") in FINAL_OUTCOMES


@dataclass(frozen=True, slots=True)
class QueryParts:
    """The values stored under one query's keys, as read (not validated: `QueryState.of` does that)."""

    base: Any
    answers: Mapping[str, Any] = field(default_factory=dict)  # agency -> its final answer
    partials: Mapping[str, Any] = field(default_factory=dict)  # agency -> its PARTIAL answer
    timers: Any = None


def read_parts(lookup: Lookup, query_id: str) -> QueryParts | None:
    """One query's parts by point lookups (its base names the agencies to look for); None: no base.

    Only requested agencies can answer (the router refuses a reply from anyone else), so the base
    says every key there is to read.
    """
    base = lookup(query_id)
    if base is None:
        return None
    requested = base.get("requested") if isinstance(base, Mapping) else None
    agencies = [a for a in requested if isinstance(a, str)] if isinstance(requested, list) else []
    answers = {a: v for a in agencies if (v := lookup(f"{query_id}/{_ANSWER}/{a}")) is not None}
    partials = {a: v for a in agencies if (v := lookup(f"{query_id}/{_PARTIAL}/{a}")) is not None}
    return QueryParts(base, answers, partials, lookup(timers_key(query_id)))


def assemble(parts: QueryParts) -> Any:
    """The query's record in the shape readers use: the base's fields, `answers` (agency ->
    outcome and time, final ones over PARTIAL ones), the derived `state` and `closed_at`, and the
    timers already fired (`reminded`, `overdue`, `closed_notified`).

    A record written before the keys were split (the whole query under `<query_id>`, with its
    answers, state and timers) is read as base, answers and timers at once: its answers and timers
    are merged with any part written since, and a state it already closed stays closed. A base
    that is not an object is returned as it is, for the reader's validation to name.
    """
    base = parts.base
    if not isinstance(base, Mapping):
        return base
    legacy = base.get("answers")
    answers: dict[str, Any] = dict(legacy) if isinstance(legacy, Mapping) else {}
    for agency, partial in parts.partials.items():
        if not is_final(answers.get(agency)):
            answers[agency] = partial
    answers.update(parts.answers)
    timers = parts.timers if isinstance(parts.timers, Mapping) else {}
    record = dict(base)
    record["answers"] = answers
    for name in ("reminded", "overdue"):
        record[name] = _union(base.get(name), timers.get(name))
    record["closed_notified"] = base.get("closed_notified") is True or timers.get("closed_notified") is True
    if base.get("state", OPEN) == OPEN:
        record["state"], record["closed_at"] = derive_state(base.get("requested"), answers)
    return record


def derive_state(requested: Any, answers: Mapping[str, Any]) -> tuple[str, int | None]:
    """OPEN until every requested agency answered finally; then REFUSED if all refused, else
    ANSWERED, closed at the latest of those answers."""
    if not isinstance(requested, list) or not requested:
        return OPEN, None
    finals: list[Mapping[str, Any]] = []
    for agency in requested:
        answer = answers.get(agency)
        if not is_final(answer):
            return OPEN, None
        finals.append(answer)
    outcomes = {answer["outcome"] for answer in finals}
    times = [at for answer in finals
             if isinstance(at := answer.get("at"), int) and not isinstance(at, bool)]
    return (REFUSED if outcomes == {REFUSED} else ANSWERED), (max(times) if times else None)


def _union(old: Any, new: Any) -> Any:
    """Agencies in either list, the legacy record's first; a value that is not a list is passed on
    for the reader's validation to name."""
    if old is None:
        old = []
    if new is None:
        new = []
    if not isinstance(old, list):
        return old
    if not isinstance(new, list):
        return new
    return list(dict.fromkeys([*old, *new]))


def query_record(lookup: Lookup, query_id: str) -> Any:
    """The assembled record of one query, or None when its base is not (yet) there."""
    parts = read_parts(lookup, query_id)
    return None if parts is None else assemble(parts)
