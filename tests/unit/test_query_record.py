"""A query's keys in `bus.queries`, each with one writer, assembled into the record readers use."""

from __future__ import annotations

import uuid
from typing import Any

from liaison.query_record import (
    QueryParts,
    answer_key,
    assemble,
    open_mark,
    query_id_of,
    query_record,
    read_parts,
    timers_key,
)
from services.deadlines.lifecycle import QueryState, mark_fired, plan
from services.router.state import answered_query, open_query

HOUR = 3_600_000
T0 = 1_795_870_000_000
QID = "4f1c2a8e-7b7d-4c55-9a43-0f3e2d1c0b9a"
AGENCIES = ["DE-BKA", "NL-KLPD", "ES-CNP"]


def base(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "query_id": QID, "requester": "FR-PN", "requested": list(AGENCIES), "kind": "INFORMATION",
        "priority": "URGENT", "case_id": "CASE-1", "created_at": T0, "deadline": T0 + 8 * HOUR}
    record.update(changes)
    return record


def answers(*items: tuple[str, str, int]) -> dict[str, Any]:
    """The keys the router writes for (agency, outcome, at) replies."""
    return dict(answered_query(QID, agency, outcome, at) for agency, outcome, at in items)


def test_a_query_just_delivered_is_open_with_nothing_fired() -> None:
    record = query_record({QID: base()}.get, QID)
    assert record == {**base(), "answers": {}, "state": "OPEN", "closed_at": None, "reminded": [],
                      "overdue": [], "closed_notified": False}


def test_the_router_writes_the_base_under_the_query_id_and_nothing_of_the_state() -> None:
    query = {"envelope": {"message_id": QID, "originator": "FR-PN", "priority": "URGENT",
                          "case_id": "CASE-1", "created_at": T0}, "kind": "INFORMATION"}
    assert open_query(query, list(AGENCIES), T0 + 8 * HOUR) == base()


def test_answers_and_partials_have_keys_of_their_own_under_the_query() -> None:
    assert answered_query(QID, "DE-BKA", "HIT", T0) == (f"{QID}/answer/DE-BKA", {"outcome": "HIT", "at": T0})
    assert answer_key(QID, "DE-BKA", "PARTIAL") == f"{QID}/partial/DE-BKA"
    assert timers_key(QID) == f"{QID}/timers"
    for key in (QID, answer_key(QID, "DE-BKA", "REFUSED"), answer_key(QID, "NL-KLPD", "PARTIAL"),
                timers_key(QID)):
        assert query_id_of(key) == QID
    keys = sorted([QID, timers_key(QID), answer_key(QID, "ES-CNP", "HIT"), str(uuid.UUID(int=0)),
                   str(uuid.UUID(int=2**128 - 1))])
    assert keys[1:4] == sorted([QID, timers_key(QID), answer_key(QID, "ES-CNP", "HIT")])  # contiguous


def test_every_answer_written_at_once_by_several_writers_is_kept_and_closes_the_query() -> None:
    """Two routers and the deadlines service write blindly, in any order: nothing is lost."""
    table: dict[str, Any] = {}
    router_a = answers(("DE-BKA", "HIT", T0 + 3 * HOUR), ("ES-CNP", "NO_HIT", T0 + 2 * HOUR))
    router_b = answers(("NL-KLPD", "REFUSED", T0 + HOUR))
    table[QID] = base()
    table.update(router_b)
    timers = mark_fired(QueryState.of(QID, query_record(table.get, QID)), plan(
        QueryState.of(QID, query_record(table.get, QID)), T0 + 7 * HOUR, 0.75).due)
    table.update(router_a)  # the last answers land after the reminders were decided
    table[timers_key(QID)] = timers
    record = query_record(table.get, QID)
    assert record["answers"] == {"DE-BKA": {"outcome": "HIT", "at": T0 + 3 * HOUR},
                                 "ES-CNP": {"outcome": "NO_HIT", "at": T0 + 2 * HOUR},
                                 "NL-KLPD": {"outcome": "REFUSED", "at": T0 + HOUR}}
    assert (record["state"], record["closed_at"]) == ("ANSWERED", T0 + 3 * HOUR)
    assert record["reminded"] == ["DE-BKA", "ES-CNP"]
    assert [(e.kind, e.agency) for e in plan(QueryState.of(QID, record), T0 + 7 * HOUR, 0.75).due] == [
        ("CLOSED", "FR-PN")]


def test_a_query_every_agency_refused_is_refused() -> None:
    table = {QID: base(), **answers(*((a, "REFUSED", T0 + i) for i, a in enumerate(AGENCIES)))}
    assert (query_record(table.get, QID)["state"], query_record(table.get, QID)["closed_at"]) == (
        "REFUSED", T0 + 2)


def test_a_partial_answer_never_hides_a_final_one_and_does_not_close() -> None:
    table = {QID: base(), **answers(("DE-BKA", "HIT", T0 + HOUR), ("DE-BKA", "PARTIAL", T0 + 2 * HOUR),
                                    ("NL-KLPD", "PARTIAL", T0 + HOUR), ("ES-CNP", "NO_HIT", T0))}
    record = query_record(table.get, QID)
    assert record["answers"]["DE-BKA"] == {"outcome": "HIT", "at": T0 + HOUR}
    assert record["answers"]["NL-KLPD"] == {"outcome": "PARTIAL", "at": T0 + HOUR}
    assert record["state"] == "OPEN"
    assert QueryState.of(QID, record).pending == ("NL-KLPD",)


def test_parts_are_read_by_point_lookups_the_base_names() -> None:
    """Only the base, the requested agencies' answer keys and the timers key are read."""
    table = {QID: base(requested=["DE-BKA"]), **answers(("DE-BKA", "HIT", T0)), timers_key(QID): None}
    asked: list[str] = []

    def lookup(key: str) -> Any:
        asked.append(key)
        return table.get(key)

    parts = read_parts(lookup, QID)
    assert parts == QueryParts(base(requested=["DE-BKA"]), {"DE-BKA": {"outcome": "HIT", "at": T0}})
    assert sorted(asked) == sorted([QID, f"{QID}/answer/DE-BKA", f"{QID}/partial/DE-BKA", f"{QID}/timers"])
    assert read_parts({**answers(("DE-BKA", "HIT", T0))}.get, QID) is None  # an answer seen before its base


def test_a_record_in_the_single_record_shape_reads_as_base_answers_and_timers() -> None:
    """A record written before the keys were split keeps its meaning, and later parts add to it."""
    legacy = {**base(), "state": "OPEN", "closed_at": None, "reminded": ["DE-BKA"], "overdue": [],
              "answers": {"NL-KLPD": {"outcome": "NO_HIT", "at": T0 + HOUR},
                          "ES-CNP": {"outcome": "PARTIAL", "at": T0 + HOUR}}}
    assert query_record({QID: legacy}.get, QID) == {**legacy, "closed_notified": False}

    table = {QID: legacy, **answers(("DE-BKA", "HIT", T0 + 3 * HOUR), ("ES-CNP", "HIT", T0 + 4 * HOUR)),
             timers_key(QID): {"reminded": ["ES-CNP"], "overdue": [], "closed_notified": True}}
    record = query_record(table.get, QID)
    assert (record["state"], record["closed_at"]) == ("ANSWERED", T0 + 4 * HOUR)
    assert record["reminded"] == ["DE-BKA", "ES-CNP"]
    assert record["closed_notified"] is True
    assert set(record["answers"]) == set(AGENCIES)

    closed = {**legacy, "state": "ANSWERED", "closed_at": T0 + 5 * HOUR, "closed_notified": True}
    assert query_record({QID: closed}.get, QID)["state"] == "ANSWERED"  # closed stays closed
    assert query_record({QID: {**legacy, "state": "WITHDRAWN"}}.get, QID)["state"] == "WITHDRAWN"


def test_malformed_parts_reach_the_reader_to_be_named() -> None:
    """Assembly never guesses: what is wrong is passed on for `QueryState.of` to refuse."""
    assert assemble(QueryParts(["not", "an", "object"])) == ["not", "an", "object"]
    record = assemble(QueryParts(base(), timers={"reminded": "DE-BKA"}))
    assert record["reminded"] == "DE-BKA"
    assert query_record({QID: base(requested="DE-BKA")}.get, QID)["state"] == "OPEN"


def test_the_open_index_follows_bases_and_closing_notices() -> None:
    q = "00000000-0000-4000-8000-000000000001"
    assert open_mark(q, {"requester": "FR-PN"}) == (q, True)
    assert open_mark(q, None) == (q, False)  # forgotten
    assert open_mark(q, {"state": "ANSWERED", "closed_notified": True}) == (q, False)  # single-record shape
    assert open_mark(f"{q}/timers", {"reminded": [], "closed_notified": False}) is None
    assert open_mark(f"{q}/timers", {"reminded": [], "closed_notified": True}) == (q, False)
    assert open_mark(f"{q}/answer/DE-BKA", {"outcome": "HIT"}) is None
