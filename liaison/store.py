"""Where a compacted table keeps its latest values: in memory, or on disk in RocksDB.

A service's state (routed messages, consents, query lifecycles) grows with years of traffic, so it
lives on disk, as Kafka Streams keeps its KTables. The store also keeps, in the same atomic write,
the topic positions its values reflect (the checkpoint): a restart reads only what came after.
Each entry may carry an expiry instant (`x`, ms since the epoch); an index by that instant lets a
service find what expired without a scan and write its tombstones.

RocksDB was chosen over LMDB because its memory is bounded (memtables and a block cache of fixed
size), where LMDB maps the whole file and its resident pages grow with the data touched.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from rocksdict import BlockBasedOptions, Cache, Options, Rdict, WriteBatch

from liaison.errors import ConfigError

EXPIRES = "x"
"""The field of a value that says when the entry expires (ms since the epoch)."""

_DATA, _POSITION, _META, _EXPIRY, _MARK = b"d", b"p", b"m", b"x", b"o"
_CACHE_BYTES = 8 << 20  # one block cache for every store of the process


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def expires_at(value: Any) -> int | None:
    """The expiry instant an entry carries, if any."""
    found = value.get(EXPIRES) if isinstance(value, dict) else None
    return found if isinstance(found, int) and not isinstance(found, bool) else None


class Store(Mapping[str, Any]):
    """The storage of one compacted table: a mapping plus the positions it reflects."""

    @abstractmethod
    def apply(self, changes: Mapping[str, Any], positions: Mapping[int, int] | None = None,
              encoded: Mapping[str, bytes] | None = None, marks: Mapping[str, bool] | None = None) -> None:
        """Write values (None deletes) and, atomically with them, the positions they reach.
        `encoded`: the JSON bytes of some of the values, as read from the topic (not encoded again).
        `marks`: names to add to (True) or take from (False) the marked set, in the same write."""

    @abstractmethod
    def marked(self, prefix: str = "") -> Iterator[str]:
        """The marked names (e.g. the queries that still have a timer), without a scan of the values;
        with `prefix`, only those that start with it."""

    @abstractmethod
    def positions(self) -> dict[int, int]: ...

    @abstractmethod
    def source(self) -> dict[str, Any] | None:
        """Which cluster and topic the stored values came from."""

    @abstractmethod
    def reset(self, source: dict[str, Any]) -> None:
        """Forget everything (values and positions) and record a new source."""

    @abstractmethod
    def prefix(self, prefix: str) -> Iterator[tuple[str, Any]]:
        """Entries whose key starts with `prefix`, in key order."""

    @abstractmethod
    def expired(self, now_ms: int, limit: int) -> list[str]:
        """Up to `limit` keys whose entry expired at or before `now_ms`."""

    @abstractmethod
    def close(self) -> None: ...


class MemoryStore(dict[str, Any], Store):
    """A dict: for tables that stay small (the directory) or live briefly (a CLI's read)."""

    _positions: dict[int, int]
    _source: dict[str, Any] | None
    _marks: set[str]

    def __init__(self) -> None:
        super().__init__()
        self._positions, self._source, self._marks = {}, None, set()

    def apply(self, changes: Mapping[str, Any], positions: Mapping[int, int] | None = None,
              encoded: Mapping[str, bytes] | None = None, marks: Mapping[str, bool] | None = None) -> None:
        for key, value in changes.items():
            if value is None:
                self.pop(key, None)
            else:
                self[key] = value
        if positions:
            self._positions.update(positions)
        for name, on in (marks or {}).items():
            if on:
                self._marks.add(name)
            else:
                self._marks.discard(name)

    def marked(self, prefix: str = "") -> Iterator[str]:
        return iter(sorted(name for name in self._marks if name.startswith(prefix)))

    def positions(self) -> dict[int, int]:
        return dict(self._positions)

    def source(self) -> dict[str, Any] | None:
        return self._source

    def reset(self, source: dict[str, Any]) -> None:
        self.clear()
        self._positions, self._source, self._marks = {}, source, set()

    def prefix(self, prefix: str) -> Iterator[tuple[str, Any]]:
        return iter(sorted((k, v) for k, v in self.items() if k.startswith(prefix)))

    def expired(self, now_ms: int, limit: int) -> list[str]:
        found = [k for k, v in self.items() if (at := expires_at(v)) is not None and at <= now_ms]
        return sorted(found)[:limit]

    def close(self) -> None:
        pass


@functools.cache
def _block_cache() -> Cache:
    return Cache(_CACHE_BYTES)


def _options() -> Options:
    """Small, fixed memory: RSS must not follow the amount of history kept."""
    table = BlockBasedOptions()
    table.set_block_cache(_block_cache())
    table.set_bloom_filter(10, False)  # most lookups are of ids not seen before
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_block_based_table_factory(table)
    options.set_write_buffer_size(4 << 20)
    options.set_max_write_buffer_number(2)
    options.set_max_total_wal_size(16 << 20)
    options.set_max_open_files(64)  # the broker needs the process's file descriptors more
    options.set_keep_log_file_num(2)
    return options


class DiskStore(Store):
    """One table's values in a RocksDB folder, JSON-encoded, with positions and an expiry index."""

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        try:
            self._db = Rdict(str(path), _options())
        except Exception as exc:  # noqa: BLE001  # rocksdict raises plain Exception (a held lock…)
            raise ConfigError(f"cannot open the state store {path}: {exc}") from None

    # -- reads ----------------------------------------------------------------------------------
    def _scan(self, start: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Raw entries from `start` while their key keeps its first byte (the key space)."""
        space = start[:1]
        for key, data in self._db.items(from_key=start):
            assert isinstance(key, bytes)
            assert isinstance(data, bytes)
            if not key.startswith(space):
                return
            yield key, data

    def __getitem__(self, key: str) -> Any:
        data = self._db.get(_DATA + key.encode())
        if data is None:
            raise KeyError(key)
        return json.loads(data)

    def get(self, key: str, default: Any = None) -> Any:
        data = self._db.get(_DATA + key.encode())
        return default if data is None else json.loads(data)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._db.get(_DATA + key.encode()) is not None

    def __iter__(self) -> Iterator[str]:
        for key, _ in self._scan(_DATA):
            yield key[1:].decode()

    def __len__(self) -> int:
        """An estimate (RocksDB's): exact counting would read every key."""
        return self._db.property_int_value("rocksdb.estimate-num-keys") or 0

    def prefix(self, prefix: str) -> Iterator[tuple[str, Any]]:
        start = _DATA + prefix.encode()
        for key, data in self._scan(start):
            if not key.startswith(start):
                return
            yield key[1:].decode(), json.loads(data)

    def positions(self) -> dict[int, int]:
        return {int(key[1:]): int(data) for key, data in self._scan(_POSITION)}

    def source(self) -> dict[str, Any] | None:
        data = self._db.get(_META + b"source")
        return None if data is None else json.loads(data)

    def expired(self, now_ms: int, limit: int) -> list[str]:
        """Keys whose entry expired; index entries left behind by a rewrite or delete are dropped."""
        found: list[str] = []
        stale = WriteBatch(raw_mode=True)
        end = _EXPIRY + b"%016d\xff" % now_ms
        for index_key, _ in self._scan(_EXPIRY):
            if index_key >= end or len(found) >= limit:
                break
            key = index_key[18:].decode()
            at = expires_at(self.get(key))
            if at is not None and at <= now_ms:
                found.append(key)
            else:
                stale.delete(index_key)
        if len(stale):
            self._db.write(stale)
        return found

    # -- writes ---------------------------------------------------------------------------------
    def marked(self, prefix: str = "") -> Iterator[str]:
        start = _MARK + prefix.encode()
        for key, _ in self._scan(start):
            if not key.startswith(start):
                return
            yield key[1:].decode()

    def apply(self, changes: Mapping[str, Any], positions: Mapping[int, int] | None = None,
              encoded: Mapping[str, bytes] | None = None, marks: Mapping[str, bool] | None = None) -> None:
        batch = WriteBatch(raw_mode=True)
        for name, on in (marks or {}).items():
            if on:
                batch.put(_MARK + name.encode(), b"")
            else:
                batch.delete(_MARK + name.encode())
        known = encoded or {}
        for key, value in changes.items():
            raw = key.encode()
            if value is None:
                batch.delete(_DATA + raw)
                continue
            data = known.get(key)
            batch.put(_DATA + raw, data if data is not None else _dumps(value))
            at = expires_at(value)
            if at is not None:
                batch.put(_EXPIRY + b"%016d\x00" % at + raw, b"")
        for partition, offset in (positions or {}).items():
            batch.put(_POSITION + str(partition).encode(), str(offset).encode())
        if len(batch):
            self._db.write(batch)

    def reset(self, source: dict[str, Any]) -> None:
        batch = WriteBatch(raw_mode=True)
        batch.delete_range(b"\x00", b"\xff")
        batch.put(_META + b"source", _dumps(source))
        self._db.write(batch)

    def compact(self) -> None:
        """Merge all that was written into the sorted levels now. After a bulk load: otherwise the
        next open starts that merge in the background, and its close waits for it."""
        self._db.compact_range(None, None)

    def close(self) -> None:
        self._db.close()


class StateDir:
    """A folder of stores that one process holds alone (an flock), found or claimed by name.

    Without a fixed instance id, a service takes the first free slot, `<service>-0`, `-1`, …, so a
    restart on the same host finds its predecessor's stores and reads only what is new.
    """

    def __init__(self, path: Path, lock_fd: int) -> None:
        self.path = path
        self._fd = lock_fd

    @classmethod
    def claim(cls, base: Path, service: str, instance: str | None = None,
              *, max_slots: int = 64) -> StateDir:
        names = [instance] if instance else [f"{service}-{n}" for n in range(max_slots)]
        for name in names:
            path = base / name
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return cls(path, fd)
        held = instance or f"{service}-0…{max_slots - 1}"
        raise ConfigError(f"the state folder {base / held} is in use by another process")

    def store(self, name: str) -> DiskStore:
        return DiskStore(self.path / name)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = -1


StoreFactory = Callable[[str], Store]
