"""Records that cite a message this instance has not seen yet wait here, off the routing path.

A reply may cite a query that another router instance committed a moment ago: its transaction
markers reach `bus.routed` a few milliseconds after the replier's inbox. Rather than stall the
partition until the state shows it, the record is parked, the records behind it are routed, and
the parked one is routed as soon as the cited message shows, or when its wait is up (then the
policy decides on an unknown reference). A reference still unknown after a whole wait goes to a
negative cache, so that a stream of replies to made-up ids costs no further waiting.

The committed offset of a partition never passes its oldest parked record, so a crash loses
nothing: the records behind it are read again, and those already routed are recognised by the
position `bus.routed` recorded for them (services/router/pipeline.py, `_seen_before`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

TopicPartition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Parked:
    source: Any  # services.router.pipeline.Source
    item: Any  # its Decoded form
    refs: frozenset[str]  # the message ids it waits for
    until: float  # monotonic instant its wait ends

    @property
    def where(self) -> TopicPartition:
        return (self.source.topic, self.source.partition)


class Parking:
    """Parked records by partition, and the references known to be missing."""

    def __init__(self, *, wait_s: float, negative_ttl_s: float, max_parked: int = 10_000,
                 max_negative: int = 100_000, max_bytes: int = 64 << 20) -> None:
        """`max_bytes`: the parked records' values in all (a record may be near 1 MB)."""
        self.max_bytes = max_bytes
        self._bytes = 0
        self.wait_s = wait_s
        self.negative_ttl_s = negative_ttl_s
        self.max_parked = max_parked
        self.max_negative = max_negative
        self._parked: dict[TopicPartition, list[Parked]] = {}
        self._missing: OrderedDict[str, float] = OrderedDict()  # ref -> monotonic expiry
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def known_missing(self, ref: str, now: float) -> bool:
        """True while `ref` sits in the negative cache (a whole wait did not find it)."""
        until = self._missing.get(ref)
        if until is None:
            return False
        if until <= now:
            del self._missing[ref]
            return False
        return True

    def has_room(self) -> bool:
        return self._count < self.max_parked and self._bytes < self.max_bytes

    def park(self, source: Any, item: Any, refs: frozenset[str], now: float) -> None:
        self._parked.setdefault((source.topic, source.partition), []).append(
            Parked(source, item, refs, now + self.wait_s))
        self._count += 1
        self._bytes += _size(source)

    def ready(self, known: Callable[[str], bool], now: float) -> list[Parked]:
        """Take out the records whose references all showed, or whose wait is up (their missing
        references go to the negative cache); in offset order per partition."""
        out: list[Parked] = []
        for where, queue in list(self._parked.items()):
            keep = []
            for parked in queue:
                missing = [ref for ref in parked.refs if not known(ref)]
                if not missing:
                    out.append(parked)
                elif parked.until <= now:
                    for ref in missing:
                        self._remember_missing(ref, now)
                    out.append(parked)
                else:
                    keep.append(parked)
            self._set(where, keep)
        return out

    def floor(self, where: TopicPartition) -> int | None:
        """The offset of the oldest record parked in the partition: its commit may not pass it."""
        queue = self._parked.get(where)
        return min(p.source.offset for p in queue) if queue else None

    def next_until(self) -> float | None:
        return min((p.until for q in self._parked.values() for p in q), default=None)

    def drop(self, partitions: Iterable[TopicPartition]) -> None:
        """Forget the records of partitions this instance lost: their new owner reads them again."""
        for where in partitions:
            self._set(where, [])

    def drop_from(self, where: TopicPartition, offset: int) -> None:
        """Forget the partition's records at or after `offset`, which will be read again."""
        self._set(where, [p for p in self._parked.get(where, ()) if p.source.offset < offset])

    def clear(self) -> None:
        self._parked.clear()
        self._count = self._bytes = 0

    def _set(self, where: TopicPartition, queue: list[Parked]) -> None:
        before = self._parked.get(where, [])
        self._count += len(queue) - len(before)
        self._bytes += sum(_size(p.source) for p in queue) - sum(_size(p.source) for p in before)
        if queue:
            self._parked[where] = queue
        else:
            self._parked.pop(where, None)

    def _remember_missing(self, ref: str, now: float) -> None:
        self._missing[ref] = now + self.negative_ttl_s
        self._missing.move_to_end(ref)
        while len(self._missing) > self.max_negative:
            self._missing.popitem(last=False)


def _size(source: Any) -> int:
    return len(source.value or b"")
