"""The registry's limits as pure code: schema shape, token buckets, failed-login memory (no broker)."""

from __future__ import annotations

import json

import pytest

from liaison.schemas import RECORD_TYPES, load_catalog
from services.registry.auth import Authenticator, LoginThrottled
from services.registry.limits import (
    RateLimiter,
    SchemaLimits,
    SchemaTooComplex,
    TokenBucket,
    check_shape,
    retry_after_s,
)
from services.registry.settings import RegistrySettings

DEFAULTS = RegistrySettings().schema_limits


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(fields: int) -> dict[str, object]:
    return {"type": "record", "name": "R", "fields": [
        {"name": f"f{i}", "type": "int"} for i in range(fields)]}


def nested(levels: int) -> object:
    """Records inside record fields, `levels` deep (three JSON levels each)."""
    schema: object = "int"
    for level in range(levels):
        schema = {"type": "record", "name": f"N{level}", "fields": [{"name": "x", "type": schema}]}
    return schema


def test_our_own_schemas_are_far_within_the_default_limits() -> None:
    """Every record type of the bus passes with a quarter of the default limits to spare."""
    quarter = SchemaLimits(max_body_bytes=DEFAULTS.max_body_bytes // 4,
                           max_elements=DEFAULTS.max_elements // 4, max_depth=DEFAULTS.max_depth // 2)
    catalog = load_catalog()
    for name in RECORD_TYPES:
        text = catalog.standalone_json(name)
        assert len(text.encode()) < quarter.max_body_bytes, name
        check_shape(json.loads(text), quarter)


def test_elements_count_objects_and_list_items() -> None:
    """Fields, types, union branches and enum symbols all count; a limit passed by one is refused."""
    limits = SchemaLimits(max_body_bytes=1024, max_elements=10, max_depth=10)
    check_shape(record(9), limits)  # the record and 9 fields
    with pytest.raises(SchemaTooComplex, match="more than 10 elements"):
        check_shape(record(10), limits)
    check_shape({"type": "enum", "name": "E", "symbols": [f"S{i}" for i in range(9)]}, limits)
    with pytest.raises(SchemaTooComplex):
        check_shape({"type": "enum", "name": "E", "symbols": [f"S{i}" for i in range(10)]}, limits)
    with pytest.raises(SchemaTooComplex):
        check_shape(["null", *(f"T{i}" for i in range(10))], limits)  # a union of names
    check_shape("string", limits)  # a primitive schema has no elements at all


def test_depth_counts_nested_objects_and_arrays() -> None:
    """A record nested in a record field is three levels deeper; scalars add none."""
    limits = SchemaLimits(max_body_bytes=1024, max_elements=1000, max_depth=9)
    check_shape(nested(3), limits)  # 3 records: 3 * (record, fields, field) = 9 levels
    with pytest.raises(SchemaTooComplex, match="deeper than 9"):
        check_shape(nested(4), limits)


def test_the_walk_survives_what_recursion_would_not() -> None:
    """Depth far beyond Python's recursion limit is refused, not crashed on."""
    deep: object = "int"
    for _ in range(5000):
        deep = {"type": "array", "items": deep}
    with pytest.raises(SchemaTooComplex):
        check_shape(deep, DEFAULTS)


def test_a_token_bucket_allows_a_burst_then_the_rate() -> None:
    """Burst at once, then one token per 1/rate seconds; the wait says when the next one comes."""
    bucket = TokenBucket(rate_per_s=2.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)
    assert bucket.take(0.25) == pytest.approx(0.25)
    assert bucket.take(0.5) == 0.0
    assert bucket.take(0.5) == pytest.approx(0.5)
    assert bucket.is_full(100.0)
    assert [bucket.take(100.0) for _ in range(4)][-1] > 0  # refilled to the burst, never beyond


def test_a_token_bucket_ignores_a_clock_going_backwards() -> None:
    bucket = TokenBucket(rate_per_s=1.0, burst=1, now=10.0)
    assert bucket.take(10.0) == 0.0
    assert bucket.take(5.0) > 0
    assert bucket.take(10.5) == pytest.approx(0.5)


def test_given_back_tokens_restore_the_bucket_up_to_the_burst() -> None:
    bucket = TokenBucket(rate_per_s=1.0, burst=1, now=0.0)
    assert bucket.take(0.0) == 0.0
    bucket.give_back(0.0)
    bucket.give_back(0.0)
    assert bucket.take(0.0) == 0.0
    assert bucket.take(0.0) > 0


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 1), (1.0, 0)])
def test_a_bucket_that_could_never_allow_anything_is_refused(rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match="positive rate"):
        RateLimiter(rate, burst)


def test_rate_limiter_keeps_one_bucket_per_key() -> None:
    """One key's flood does not touch another's bucket; waiting refills it."""
    clock = Clock()
    limiter = RateLimiter(rate_per_s=1.0, burst=2, clock=clock)
    assert [limiter.take("FR-PN") for _ in range(2)] == [0.0, 0.0]
    assert limiter.take("FR-PN") == pytest.approx(1.0)
    assert limiter.take("DE-BKA") == 0.0
    clock.now += 1.0
    assert limiter.take("FR-PN") == 0.0


def test_rate_limiter_memory_is_bounded_forgetting_full_buckets_first() -> None:
    """At max_keys, buckets equal to new ones go first, then the oldest, so memory stays bounded."""
    clock = Clock()
    limiter = RateLimiter(rate_per_s=0.001, burst=1, clock=clock, max_keys=3)
    limiter.take("empty-1")
    limiter.take("empty-2")
    limiter.give_back("empty-2")  # full again: as good as new
    limiter.take("empty-3")
    limiter.take("new")
    assert len(limiter) == 3
    assert limiter.take("empty-1") > 0  # still remembered as empty
    for n in range(10):
        limiter.take(f"flood-{n}")
    assert len(limiter) == 3


@pytest.mark.parametrize(("wait", "header"), [(0.0001, 1), (1.0, 1), (1.2, 2), (59.5, 60)])
def test_retry_after_is_whole_seconds_rounded_up(wait: float, header: int) -> None:
    assert retry_after_s(wait) == header


class Broker:
    """Stands in for the broker's SCRAM login: counts the logins it was asked for."""

    def __init__(self, passwords: dict[str, str]) -> None:
        self.passwords = passwords
        self.asked: list[str] = []

    async def __call__(self, user: str, password: str) -> bool:
        self.asked.append(user)
        return self.passwords.get(user) == password


async def test_a_repeated_wrong_password_is_refused_without_asking_the_broker_again() -> None:
    """The failure is remembered for failed_cache_s, then asked about again."""
    clock, broker = Clock(), Broker({"FR-PN": "right"})
    auth = Authenticator(broker, writers=frozenset(), cache_s=60, failed_cache_s=30, clock=clock)
    for _ in range(5):
        assert not await auth.valid("FR-PN", "wrong", peer="10.0.0.1")
    assert broker.asked == ["FR-PN"]
    assert await auth.valid("FR-PN", "right", peer="10.0.0.1")  # a failure caches nothing for others
    clock.now += 31
    assert not await auth.valid("FR-PN", "wrong", peer="10.0.0.1")
    assert broker.asked == ["FR-PN", "FR-PN", "FR-PN"]


async def test_failed_logins_per_address_are_throttled_and_successes_do_not_count() -> None:
    """Distinct wrong passwords use up an address's bucket; then 429 without a broker login."""
    clock, broker = Clock(), Broker({"FR-PN": "right", "DE-BKA": "also-right"})
    failures = RateLimiter(rate_per_s=0.1, burst=3, clock=clock)
    auth = Authenticator(broker, writers=frozenset(), cache_s=60, failed_cache_s=30, failures=failures,
                         clock=clock)
    for _ in range(5):  # successes give their token back
        assert await auth.valid("FR-PN", "right", peer="10.0.0.1")
    for guess in ("a", "b", "c"):
        assert not await auth.valid("FR-PN", guess, peer="10.0.0.1")
    asked = len(broker.asked)
    with pytest.raises(LoginThrottled) as throttled:
        await auth.valid("FR-PN", "d", peer="10.0.0.1")
    assert throttled.value.retry_after_s == pytest.approx(10.0)
    # The broker was not asked; a credential it accepted lately still works from that address;
    # a new one from there waits; other addresses are not affected.
    assert len(broker.asked) == asked
    assert await auth.valid("FR-PN", "right", peer="10.0.0.1")
    with pytest.raises(LoginThrottled):
        await auth.valid("DE-BKA", "also-right", peer="10.0.0.1")
    assert not await auth.valid("FR-PN", "e", peer="10.0.0.2")
    clock.now += 10
    assert await auth.valid("DE-BKA", "also-right", peer="10.0.0.1")


async def test_a_broker_that_does_not_answer_costs_the_address_nothing() -> None:
    clock = Clock()
    failures = RateLimiter(rate_per_s=0.001, burst=1, clock=clock)

    async def unreachable(user: str, password: str) -> bool:
        raise ConnectionError("broker down")

    auth = Authenticator(unreachable, writers=frozenset(), cache_s=60, failures=failures, clock=clock)
    for _ in range(3):
        with pytest.raises(ConnectionError):
            await auth.valid("FR-PN", "right", peer="10.0.0.1")


def test_settings_refuse_more_workers_than_jobs() -> None:
    with pytest.raises(ValueError, match="PARSE_MAX_PENDING"):
        RegistrySettings(registry_parse_workers=4, registry_parse_max_pending=2)
