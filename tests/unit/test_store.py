"""The state stores: the disk store keeps values, positions and expiry across reopening."""

from __future__ import annotations

from pathlib import Path

import pytest

from liaison.errors import ConfigError
from liaison.store import DiskStore, MemoryStore, StateDir, Store


@pytest.fixture(params=["memory", "disk"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    return MemoryStore() if request.param == "memory" else DiskStore(tmp_path / "t")


def test_values_are_written_and_deleted(store: Store) -> None:
    store.apply({"a": {"v": 1}, "b": {"v": 2}})
    store.apply({"a": None, "c": [1, 2]})
    assert store.get("a") is None
    assert "a" not in store
    assert store.get("b") == {"v": 2}
    assert "c" in store
    assert store.get("missing", "default") == "default"


def test_prefix_reads_a_contiguous_key_range_in_order(store: Store) -> None:
    store.apply({"q1": 0, "q1/answer/DE": 1, "q1/timers": 2, "q2": 3, "q10": 4, "p": 5})
    assert list(store.prefix("q1/")) == [("q1/answer/DE", 1), ("q1/timers", 2)]
    assert [k for k, _ in store.prefix("q1")] == ["q1", "q1/answer/DE", "q1/timers", "q10"]


def test_expired_finds_due_entries_only(store: Store) -> None:
    store.apply({"old": {"x": 1_000}, "new": {"x": 5_000}, "never": {"y": 1}})
    assert store.expired(1_000, limit=10) == ["old"]
    assert store.expired(999, limit=10) == []
    assert sorted(store.expired(10_000, limit=10)) == ["new", "old"]
    assert len(store.expired(10_000, limit=1)) == 1


def test_a_rewritten_or_deleted_entry_is_not_reported_expired(store: Store) -> None:
    store.apply({"k": {"x": 1_000}, "gone": {"x": 1_000}})
    store.apply({"k": {"x": 9_000}, "gone": None})
    assert store.expired(2_000, limit=10) == []
    assert store.expired(9_000, limit=10) == ["k"]


def test_positions_are_written_with_the_values(store: Store) -> None:
    store.apply({"a": 1}, {0: 5, 1: 7})
    store.apply({}, {1: 9})
    assert store.positions() == {0: 5, 1: 9}


def test_reset_forgets_everything_and_records_the_source(store: Store) -> None:
    store.apply({"a": {"x": 1}}, {0: 5})
    store.reset({"topic": "t", "cluster": "c"})
    assert store.get("a") is None
    assert store.positions() == {}
    assert store.expired(10, limit=10) == []
    assert store.source() == {"topic": "t", "cluster": "c"}


def test_the_disk_store_survives_reopening(tmp_path: Path) -> None:
    first = DiskStore(tmp_path / "t")
    first.reset({"topic": "t", "cluster": "c"})
    first.apply({f"id-{i}": {"i": i} for i in range(1000)}, {0: 1000})
    first.close()
    again = DiskStore(tmp_path / "t")
    assert again.get("id-999") == {"i": 999}
    assert again.positions() == {0: 1000}
    assert again.source() == {"topic": "t", "cluster": "c"}
    assert 900 <= len(again) <= 1100  # RocksDB's estimate
    again.close()


def test_a_compacted_store_keeps_its_entries_and_leaves_nothing_to_merge(tmp_path: Path) -> None:
    """After a bulk load, `compact` merges the flushed files, so that no later open starts to."""
    store = DiskStore(tmp_path / "t")
    for chunk in range(2):
        store.apply({f"id-{chunk}-{i}": {"pad": "x" * 200} for i in range(5000)}, {0: chunk})
    store._db.flush()  # one file on level 0: fewer than RocksDB merges by itself (4)
    assert store._db.property_int_value("rocksdb.num-files-at-level0") == 1
    store.compact()
    assert store._db.property_int_value("rocksdb.num-files-at-level0") == 0
    assert store.get("id-1-4999") == {"pad": "x" * 200}
    assert store.positions() == {0: 1}
    store.close()


def test_a_store_cannot_be_opened_twice(tmp_path: Path) -> None:
    first = DiskStore(tmp_path / "t")
    with pytest.raises(ConfigError, match="cannot open the state store"):
        DiskStore(tmp_path / "t")
    first.close()


def test_instances_claim_their_own_slot_and_find_it_again(tmp_path: Path) -> None:
    a = StateDir.claim(tmp_path, "router")
    b = StateDir.claim(tmp_path, "router")
    assert (a.path.name, b.path.name) == ("router-0", "router-1")
    a.release()
    assert StateDir.claim(tmp_path, "router").path.name == "router-0"
    named = StateDir.claim(tmp_path, "router", "eu-west-2")
    with pytest.raises(ConfigError, match="in use"):
        StateDir.claim(tmp_path, "router", "eu-west-2")
    named.release()
    b.release()


def test_marks_are_written_with_the_values_and_survive_a_reset_only_if_rewritten(store: Store) -> None:
    store.apply({"q1": {"a": 1}, "q2": {"a": 2}}, marks={"q1": True, "q2": True})
    store.apply({"q1/timers": {"closed": True}}, marks={"q1": False})
    assert list(store.marked()) == ["q2"]
    store.reset({"topic": "t", "cluster": "c"})
    assert list(store.marked()) == []


def test_marks_are_read_by_prefix(store: Store) -> None:
    store.apply({"a": 1}, marks={"FR-PN/JIT-A": True, "FR-PN/JIT-B": True, "FR-PNX/JIT-C": True,
                                 "DE-BKA/JIT-D": True})
    assert list(store.marked("FR-PN/")) == ["FR-PN/JIT-A", "FR-PN/JIT-B"]
    assert list(store.marked("IT-PS/")) == []
    store.apply({}, marks={"FR-PN/JIT-A": False})
    assert list(store.marked("FR-PN/")) == ["FR-PN/JIT-B"]
    assert len(list(store.marked())) == 3
