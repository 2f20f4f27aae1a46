"""The timers of a query as pure functions of its assembled `bus.queries` record and the time."""

from __future__ import annotations

from typing import Any

import pytest

from services.deadlines.lifecycle import (
    Event,
    MalformedQuery,
    QueryState,
    has_timer,
    mark_fired,
    new_final_answers,
    notices,
    plan,
)

HOUR = 3_600_000
T0 = 1_795_870_000_000
SHARE = 0.75


def record(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "query_id": "q-1", "requester": "FR-PN", "requested": ["DE-BKA", "NL-KLPD"],
        "kind": "INFORMATION", "priority": "URGENT", "case_id": "CASE-1", "created_at": T0,
        "deadline": T0 + 8 * HOUR, "state": "OPEN", "answers": {}, "reminded": [], "overdue": [],
        "closed_at": None,
    }
    base.update(changes)
    return base


def state(**changes: Any) -> QueryState:
    return QueryState.of("q-1", record(**changes))


def due(query: QueryState, now: int, **kw: Any) -> list[tuple[str, str]]:
    return [(e.kind, e.agency) for e in plan(query, now, SHARE, **kw).due]


def test_reminder_falls_at_the_share_of_the_span() -> None:
    """An 8-hour deadline with share 0.75 is reminded at 6 hours."""
    assert state().reminder_at(SHARE) == T0 + 6 * HOUR
    assert state().reminder_at(0.5) == T0 + 4 * HOUR


def test_nothing_is_due_before_the_reminder_and_the_next_timer_is_the_reminder() -> None:
    """Before the reminder instant nothing fires; the service sleeps until the reminder."""
    timers = plan(state(), T0 + 6 * HOUR - 1, SHARE)
    assert timers.due == ()
    assert timers.next_at == T0 + 6 * HOUR


def test_reminder_is_due_for_every_requested_agency_without_a_final_answer() -> None:
    """A PARTIAL answer still owes a final one; a final answer ends that agency's timers."""
    query = state(requested=["DE-BKA", "NL-KLPD", "ES-CNP"],
                  answers={"NL-KLPD": {"outcome": "PARTIAL", "at": T0 + HOUR},
                           "ES-CNP": {"outcome": "NO_HIT", "at": T0 + HOUR}})
    timers = plan(query, T0 + 6 * HOUR, SHARE)
    assert [(e.kind, e.agency, e.due_at) for e in timers.due] == [
        ("REMINDER", "DE-BKA", T0 + 6 * HOUR), ("REMINDER", "NL-KLPD", T0 + 6 * HOUR)]
    assert timers.next_at == T0 + 8 * HOUR


def test_a_recorded_reminder_never_fires_again() -> None:
    """`reminded` in the record is what makes the reminder fire once, also after a restart."""
    query = state(reminded=["DE-BKA", "NL-KLPD"])
    assert due(query, T0 + 7 * HOUR) == []
    assert plan(query, T0 + 7 * HOUR, SHARE).next_at == T0 + 8 * HOUR


def test_overdue_is_due_at_the_deadline_for_each_late_agency() -> None:
    query = state(reminded=["DE-BKA", "NL-KLPD"],
                  answers={"DE-BKA": {"outcome": "HIT", "at": T0 + 7 * HOUR}})
    assert due(query, T0 + 8 * HOUR) == [("OVERDUE", "NL-KLPD")]


def test_a_deadline_missed_while_down_sends_the_overdue_notice_only() -> None:
    """A reminder whose deadline already passed is pointless: the overdue notice replaces it."""
    query = state()
    assert due(query, T0 + 30 * HOUR) == [("OVERDUE", "DE-BKA"), ("OVERDUE", "NL-KLPD")]
    done = state(overdue=["DE-BKA", "NL-KLPD"])
    assert due(done, T0 + 30 * HOUR) == []
    assert plan(done, T0 + 30 * HOUR, SHARE).next_at is None


def test_a_reminder_missed_while_down_fires_at_start_when_the_deadline_is_still_ahead() -> None:
    assert due(state(), T0 + 7 * HOUR) == [("REMINDER", "DE-BKA"), ("REMINDER", "NL-KLPD")]


def test_a_deadline_not_after_creation_skips_the_reminder() -> None:
    query = state(deadline=T0)
    assert due(query, T0) == [("OVERDUE", "DE-BKA"), ("OVERDUE", "NL-KLPD")]
    assert plan(query, T0 - 1, SHARE).next_at == T0


def test_an_answered_query_is_closed_once_and_has_no_timers() -> None:
    """ANSWERED or REFUSED: one CLOSED notice to the requester, then nothing."""
    answered = state(state="ANSWERED", overdue=["DE-BKA"],
                     answers={"DE-BKA": {"outcome": "HIT", "at": T0 + 9 * HOUR},
                              "NL-KLPD": {"outcome": "NO_HIT", "at": T0 + HOUR}})
    timers = plan(answered, T0 + 9 * HOUR, SHARE)
    assert [(e.kind, e.agency) for e in timers.due] == [("CLOSED", "FR-PN")]
    assert timers.next_at is None
    assert due(state(state="ANSWERED", closed_notified=True), T0 + 9 * HOUR) == []
    assert due(state(state="REFUSED"), T0) == [("CLOSED", "FR-PN")]
    assert due(state(state="WITHDRAWN"), T0 + 9 * HOUR) == []


def test_mark_fired_is_the_timers_key_with_the_events_added() -> None:
    """The value holds only the timers (no field of the router's), old ones kept; it is idempotent."""
    query = state(reminded=["NL-KLPD"], overdue=[])
    events = [Event("REMINDER", "q-1", "DE-BKA", T0), Event("REMINDER", "q-1", "NL-KLPD", T0),
              Event("OVERDUE", "q-1", "DE-BKA", T0)]
    timers = mark_fired(query, events)
    assert timers == {"reminded": ["DE-BKA", "NL-KLPD"], "overdue": ["DE-BKA"], "closed_notified": False}
    assert mark_fired(state(**timers), events) == timers
    assert mark_fired(query, [Event("CLOSED", "q-1", "FR-PN", T0)]) == {
        "reminded": ["NL-KLPD"], "overdue": [], "closed_notified": True}


def test_only_an_open_or_unnotified_closed_query_is_kept_for_its_timers() -> None:
    assert has_timer(state())
    assert has_timer(state(state="ANSWERED"))
    assert not has_timer(state(state="ANSWERED", closed_notified=True))
    assert not has_timer(state(state="WITHDRAWN"))


def test_notices_say_who_is_told_what() -> None:
    query = state()
    reminder = notices(query, Event("REMINDER", "q-1", "DE-BKA", T0))
    assert [(n.to, n.kind, n.recipient) for n in reminder] == [("DE-BKA", "REMINDER", "FR-PN")]
    assert "2026-11-28T20:46:40Z" in reminder[0].reason  # the deadline, in UTC
    overdue = notices(query, Event("OVERDUE", "q-1", "DE-BKA", T0))
    assert [(n.to, n.kind, n.recipient) for n in overdue] == [
        ("DE-BKA", "OVERDUE", "DE-BKA"), ("FR-PN", "OVERDUE", "DE-BKA")]
    closed = notices(state(state="REFUSED", answers={"DE-BKA": {"outcome": "REFUSED", "at": T0}}),
                     Event("CLOSED", "q-1", "FR-PN", T0))
    assert [(n.to, n.kind, n.recipient, n.reason_code) for n in closed] == [
        ("FR-PN", "CLOSED", None, "REFUSED")]
    assert "DE-BKA REFUSED" in closed[0].reason


def test_reply_times_count_each_final_answer_once() -> None:
    """PARTIAL answers are not replies in the sense of the deadline; seen ones are not counted again."""
    query = state(answers={"DE-BKA": {"outcome": "HIT", "at": T0 + 2 * HOUR},
                           "NL-KLPD": {"outcome": "PARTIAL", "at": T0 + HOUR}})
    assert new_final_answers(query, frozenset()) == [("DE-BKA", 2 * HOUR)]
    assert new_final_answers(query, frozenset({"DE-BKA"})) == []


@pytest.mark.parametrize("changes", [
    {"requested": None}, {"requested": "DE-BKA"}, {"requested": [1]}, {"deadline": None},
    {"deadline": "tomorrow"}, {"created_at": True}, {"requester": None}, {"state": None},
    {"answers": {"DE-BKA": "HIT"}}, {"reminded": "DE-BKA"},
])
def test_malformed_records_are_refused_with_the_field_named(changes: dict[str, Any]) -> None:
    with pytest.raises(MalformedQuery, match=repr(next(iter(changes))).strip("'")):
        QueryState.of("q-1", record(**changes))


def test_a_record_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(MalformedQuery):
        QueryState.of("q-1", ["not", "an", "object"])  # type: ignore[arg-type]  # what a bad writer might put
