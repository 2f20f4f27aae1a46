"""Parking: records waiting for a cited message, the floor of their partition, the negative cache."""

from __future__ import annotations

from dataclasses import dataclass

from services.router.parking import Parking


@dataclass(frozen=True)
class Src:
    topic: str
    partition: int
    offset: int
    value: bytes = b""


def parking(**kw: float) -> Parking:
    return Parking(wait_s=kw.get("wait_s", 2.0), negative_ttl_s=kw.get("ttl_s", 60.0),
                   max_parked=int(kw.get("max_parked", 10)))


def test_a_record_is_released_when_the_message_it_cites_shows() -> None:
    p = parking()
    p.park(Src("r", 0, 5), "item", frozenset({"q1"}), now=0.0)
    known: set[str] = set()
    assert p.ready(known.__contains__, now=0.5) == []
    known.add("q1")
    released = p.ready(known.__contains__, now=0.6)
    assert [(r.source.offset, r.item) for r in released] == [(5, "item")]
    assert len(p) == 0
    assert not p.known_missing("q1", now=0.6)


def test_after_a_whole_wait_the_record_goes_and_its_reference_is_cached_as_missing() -> None:
    p = parking(wait_s=2.0, ttl_s=60.0)
    p.park(Src("r", 0, 5), "a", frozenset({"nowhere"}), now=0.0)
    assert p.ready(lambda _: False, now=1.9) == []
    assert [r.item for r in p.ready(lambda _: False, now=2.0)] == ["a"]
    assert p.known_missing("nowhere", now=30.0)
    assert not p.known_missing("nowhere", now=62.5)  # the entry lapsed 60 s after the wait ended


def test_the_commit_floor_is_the_oldest_parked_record_of_the_partition() -> None:
    p = parking()
    assert p.floor(("r", 0)) is None
    p.park(Src("r", 0, 9), "late", frozenset({"b"}), now=0.0)
    p.park(Src("r", 0, 4), "early", frozenset({"a"}), now=0.0)
    p.park(Src("r", 1, 2), "other", frozenset({"a"}), now=0.0)
    assert (p.floor(("r", 0)), p.floor(("r", 1))) == (4, 2)
    p.ready({"a"}.__contains__, now=0.1)
    assert (p.floor(("r", 0)), p.floor(("r", 1))) == (9, None)


def test_lost_partitions_and_records_read_again_are_forgotten() -> None:
    p = parking()
    for offset in (1, 5, 9):
        p.park(Src("r", 0, offset), offset, frozenset({"q"}), now=0.0)
    p.park(Src("r", 1, 3), 3, frozenset({"q"}), now=0.0)
    p.drop_from(("r", 0), 5)
    assert (len(p), p.floor(("r", 0))) == (2, 1)
    p.drop([("r", 0)])
    assert (len(p), p.floor(("r", 0)), p.floor(("r", 1))) == (1, None, 3)
    p.clear()
    assert (len(p), p.floor(("r", 1))) == (0, None)


def test_room_is_bounded() -> None:
    p = parking(max_parked=2)
    p.park(Src("r", 0, 1), 1, frozenset({"a"}), now=0.0)
    assert p.has_room()
    p.park(Src("r", 0, 2), 2, frozenset({"b"}), now=0.0)
    assert not p.has_room()


def test_the_negative_cache_is_bounded() -> None:
    p = Parking(wait_s=0.0, negative_ttl_s=60.0, max_negative=3)
    for i in range(5):
        p.park(Src("r", 0, i), i, frozenset({f"ref-{i}"}), now=0.0)
    p.ready(lambda _: False, now=0.0)
    assert [p.known_missing(f"ref-{i}", now=1.0) for i in range(5)] == [False, False, True, True, True]


def test_room_is_bounded_in_bytes_too() -> None:
    @dataclass(frozen=True)
    class Big:
        topic: str
        partition: int
        offset: int
        value: bytes

    p = Parking(wait_s=2.0, negative_ttl_s=60.0, max_parked=100, max_bytes=1000)
    p.park(Big("r", 0, 1, b"x" * 600), 1, frozenset({"a"}), now=0.0)
    assert p.has_room()
    p.park(Big("r", 0, 2, b"x" * 600), 2, frozenset({"b"}), now=0.0)
    assert not p.has_room()
    p.ready({"a", "b"}.__contains__, now=0.1)
    assert p.has_room()
