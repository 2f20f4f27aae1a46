"""The router's bounds on one input: pure checks, no broker."""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from liaison.sdk import envelope, query
from services.router.limits import Limits, canonical_uuid, check_input, check_recipients

LIMITS = Limits(max_record_bytes=1000, max_named=3, max_groups=1, max_recipients=5, max_id_length=40)


def _query(**changes: Any) -> dict[str, Any]:
    record = query(envelope("FR-PN", to=["DE-BKA"], case_id="CASE-1"), "Known?")
    record["envelope"].update(changes)
    return record


@given(st.one_of(st.text(max_size=40), st.uuids().map(str), st.uuids().map(lambda u: str(u).upper())))
def test_canonical_means_what_uuid_itself_prints(value: str) -> None:
    """An id is accepted exactly when it is the text `uuid.UUID` prints for it."""
    try:
        expected = str(uuid.UUID(value)) == value
    except ValueError:
        expected = False
    assert canonical_uuid(value) == expected


def test_a_plain_query_passes() -> None:
    assert check_input(LIMITS, 500, _query()) is None


def test_each_bound_has_its_code() -> None:
    """Size, ids, lengths, addressees, groups and restrictions are refused with their own code."""
    cases = {
        "TOO_LARGE": (1001, _query()),
        "INVALID_ID": (10, _query(message_id=str(uuid.uuid4()).upper())),
        "FIELD_TOO_LONG": (10, _query(trace_id="t" * 41)),
        "TOO_MANY_ADDRESSEES": (10, _query(addressing={"agencies": ["A-1", "A-2", "A-3", "A-4"],
                                                      "groups": [], "broadcast": False})),
        "TOO_MANY_GROUPS": (10, _query(addressing={"agencies": [], "groups": ["EU", "SCHENGEN"],
                                                  "broadcast": False})),
    }
    def code(size: int, record: dict[str, Any]) -> str:
        return (check_input(LIMITS, size, record) or ("",))[0]

    assert {name: code(size, record) for name, (size, record) in cases.items()} == {c: c for c in cases}
    assert code(10, _query(restricted=["A", "B", "C", "D"])) == "TOO_MANY_ADDRESSEES"
    assert code(10, _query(correlation_id="not-a-uuid")) == "INVALID_ID"


def test_recipients_are_counted_after_expansion() -> None:
    assert check_recipients(LIMITS, 5) is None
    assert (check_recipients(LIMITS, 6) or ("",))[0] == "TOO_MANY_RECIPIENTS"
