"""What one client may ask of the registry: schema shape limits and token-bucket rate limiters.

Pure code (no aiohttp, no Kafka, an injected clock), so every limit is unit-tested without sleeping.
The shape of a schema is measured on its JSON, before any Avro library sees it: the Avro parser
and compatibility checker are quadratic in places, so a document of a few hundred kilobytes can keep
them busy for minutes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class RefusalReason(StrEnum):
    """Why a request was refused by a limit: the `reason` label of `liaison_registry_refused_total`."""

    BODY_TOO_LARGE = "body_too_large"
    SCHEMA_TOO_COMPLEX = "schema_too_complex"
    PARSE_TIMEOUT = "parse_timeout"
    PARSE_CRASHED = "parse_crashed"
    PARSE_BUSY = "parse_busy"
    USER_RATE = "user_rate"
    LOGIN_THROTTLED = "login_throttled"


@dataclass(frozen=True)
class SchemaLimits:
    """How big a request body, and how many elements and nesting levels a schema, may have."""

    max_body_bytes: int
    max_elements: int
    max_depth: int


class SchemaTooComplex(ValueError):
    """The schema's JSON has more elements or nesting levels than the registry accepts."""


def check_shape(document: object, limits: SchemaLimits) -> None:
    """Refuse a schema document with too many elements or too deep a nesting, without recursion.

    Elements are JSON objects (types, fields) and array items that are not objects (union
    branches, enum symbols, aliases); depth counts nested objects and arrays, the root being 1.
    The walk stops at the first limit passed, so its cost is bounded by the limits too.

    Raises:
        SchemaTooComplex: a limit is passed; the message names it.
    """
    elements = 0
    stack: list[tuple[object, int]] = [(document, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = list(node.values())
            elements += 1
        elif isinstance(node, list):
            children = node
            elements += sum(1 for item in node if not isinstance(item, dict))
        else:
            continue
        if depth > limits.max_depth:
            raise SchemaTooComplex(f"schema nested deeper than {limits.max_depth} levels of JSON objects "
                                   "and arrays")
        if elements > limits.max_elements:
            raise SchemaTooComplex(f"schema has more than {limits.max_elements} elements (types, fields, "
                                   "union branches, symbols)")
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def retry_after_s(wait_s: float) -> int:
    """A `Retry-After` value: whole seconds, at least one."""
    return max(1, math.ceil(wait_s))


class TokenBucket:
    """`burst` requests at once, then `rate_per_s` a second: short spikes pass, a steady flood does not."""

    __slots__ = ("_stamp", "_tokens", "burst", "rate_per_s")

    def __init__(self, rate_per_s: float, burst: int, now: float) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("a token bucket needs a positive rate and a burst of at least one")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = now

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._stamp)  # a clock going backwards never adds tokens
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate_per_s)
        self._stamp = max(self._stamp, now)

    def take(self, now: float) -> float:
        """Take one token: 0.0 when it was there, else how many seconds until one will be."""
        self._refill(now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate_per_s

    def give_back(self, now: float) -> None:
        """Return a token taken for something that turned out not to count."""
        self._refill(now)
        self._tokens = min(float(self.burst), self._tokens + 1.0)

    def is_full(self, now: float) -> bool:
        """A full bucket is the same as a new one, so it can be forgotten."""
        self._refill(now)
        return self._tokens >= self.burst


class RateLimiter:
    """One token bucket per key (a user, an address), with a bounded number of keys in memory.

    At `max_keys`, full buckets are forgotten first (they equal new ones), then the oldest keys.
    """

    def __init__(self, rate_per_s: float, burst: int, *, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 10_000) -> None:
        TokenBucket(rate_per_s, burst, 0.0)  # the same argument checks, at construction
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str) -> float:
        """Take one token for `key`: 0.0 when allowed, else seconds until it will be."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            self._make_room(now)
            bucket = self._buckets[key] = TokenBucket(self.rate_per_s, self.burst, now)
        return bucket.take(now)

    def give_back(self, key: str) -> None:
        """Undo a `take` that should not have counted (a login that succeeded after all)."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.give_back(self._clock())

    def _make_room(self, now: float) -> None:
        if len(self._buckets) < self.max_keys:
            return
        self._buckets = {key: b for key, b in self._buckets.items() if not b.is_full(now)}
        while len(self._buckets) >= self.max_keys:
            del self._buckets[next(iter(self._buckets))]
