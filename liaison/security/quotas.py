"""Client quotas of agency users: how fast each may produce, fetch and keep the broker's threads busy.

A compromised or broken agency system holds a valid credential; its ACLs keep it on its own topics,
but nothing else stops it from filling the disks or starving everyone else of broker time. Kafka's
user quotas do: past its rate the broker delays the user's responses (and says so in
`throttle_time_ms`), so its average stays at the rate while other clients are served as before.

Neither confluent-kafka's AdminClient (2.16) nor aiokafka's admin client can alter or describe
client quotas, and a user is not a config resource that IncrementalAlterConfigs could change (KRaft
keeps quotas as their own metadata records). So this module builds AlterClientQuotas (API key 49)
and DescribeClientQuotas (API key 48) from aiokafka's protocol types and sends them on an aiokafka
admin client's connection; a broker forwards the change to the controller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from types import TracebackType
from typing import Any, ClassVar, Literal, Self

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import for_code
from aiokafka.protocol.admin import DescribeClientQuotasRequest
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Boolean, Float64, Int16, Int32, Schema, String
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from liaison.core.settings import KafkaSettings
from liaison.errors import ConfigError
from liaison.kafka_admin import chunks
from liaison.security.admin import BATCH, SecurityAdminError

QuotaKey = Literal["producer_byte_rate", "consumer_byte_rate", "request_percentage"]
MIN_PRODUCE_RATE = 1024
"""Below 1 KiB/s a single ordinary message would be held back for seconds."""
MIN_FETCH_RATE = 128 * 1024
"""A fetch is answered in full or, when it would pass the quota, empty (the broker takes the bytes
back). Kafka caps a fetch at what the quota allows in its window (rate x 10 s with the default
`quota.window.num` 11 x 1 s), but always sends a partition's first record batch whole; a batch
larger than rate x 10 s would therefore never be delivered. Batches reach 1 MiB (the broker's
`message.max.bytes`), so the rate must allow more than 1 MiB in 10 s."""
MIN_REQUEST_PERCENTAGE = 1.0

_USER = "user"
_MATCH_EXACT, _MATCH_ANY = 0, 2  # DescribeClientQuotas match types: this name, any named entity


@dataclass(frozen=True)
class Quota:
    """A user's client quotas, per broker; None where none is set (not limited there).

    Args:
        produce_bytes: `producer_byte_rate`, bytes per second the user may write.
        fetch_bytes: `consumer_byte_rate`, bytes per second it may read.
        request_percentage: share of one broker thread (network or I/O) its requests may use, in %.
    """

    produce_bytes: int | None = None
    fetch_bytes: int | None = None
    request_percentage: float | None = None

    KEYS: ClassVar[dict[str, QuotaKey]] = {"produce_bytes": "producer_byte_rate",
                                           "fetch_bytes": "consumer_byte_rate",
                                           "request_percentage": "request_percentage"}

    def checked(self) -> Quota:
        """These quotas, if each is one Liaison sets (what the broker holds is read as it is)."""
        for name, least in (("produce_bytes", MIN_PRODUCE_RATE), ("fetch_bytes", MIN_FETCH_RATE)):
            value = getattr(self, name)
            if value is not None and value < least:
                raise ConfigError(f"{name.replace('_', ' ')} must be at least {least} bytes/s, not {value}")
        if self.request_percentage is not None and self.request_percentage < MIN_REQUEST_PERCENTAGE:
            raise ConfigError(f"request percentage must be at least {MIN_REQUEST_PERCENTAGE:g}, "
                              f"not {self.request_percentage:g}")
        return self

    def values(self) -> dict[QuotaKey, float]:
        """Kafka's names and values of the quotas that are set."""
        return {key: float(value) for name, key in self.KEYS.items()
                if (value := getattr(self, name)) is not None}

    @classmethod
    def from_values(cls, values: Mapping[str, float]) -> Quota:
        """From Kafka's names (others, such as `controller_mutation_rate`, are left out)."""
        found: dict[str, Any] = {}
        for name, key in cls.KEYS.items():
            if key in values:
                found[name] = values[key] if name == "request_percentage" else int(values[key])
        return cls(**found)

    def merged(self, changes: Quota) -> Quota:
        """These quotas with each one that `changes` sets replaced."""
        return Quota(**{f.name: getattr(changes, f.name) if getattr(changes, f.name) is not None
                        else getattr(self, f.name) for f in fields(self)})

    def missing(self, defaults: Quota) -> Quota:
        """The quotas of `defaults` that are not set here."""
        return Quota(**{f.name: getattr(defaults, f.name) if getattr(self, f.name) is None else None
                        for f in fields(self)})

    @property
    def empty(self) -> bool:
        return not self.values()

    def describe(self) -> str:
        """`produce 1048576 B/s, fetch 4194304 B/s, requests 50%`; an unset one is `unlimited`."""
        def rate(value: int | None) -> str:
            return "unlimited" if value is None else f"{value} B/s"
        share = "unlimited" if self.request_percentage is None else f"{self.request_percentage:g}%"
        return f"produce {rate(self.produce_bytes)}, fetch {rate(self.fetch_bytes)}, requests {share}"

    def to_dict(self) -> dict[str, Any]:
        return {"producer_byte_rate": self.produce_bytes, "consumer_byte_rate": self.fetch_bytes,
                "request_percentage": self.request_percentage}


class QuotaDefaults(BaseSettings):
    """The quotas every agency user gets when it is onboarded or resumed (`LIAISON_AGENCY_*`).

    Sized for real traffic with room to spare: a bus message is an Avro record of a few KiB, and a
    busy national bureau sends thousands a day, not a second. 1 MiB/s is hundreds of messages a
    second, yet caps what a runaway client writes at about 86 GB a day per broker. Reading may be
    four times faster, so an agency back from an outage catches up on its inbox quickly. 50% of
    one broker thread is far more than a normal client's requests take, and stops one agency
    flooding the broker with tiny requests (the local broker has 6 threads, 600%).
    """

    model_config = SettingsConfigDict(env_prefix="LIAISON_AGENCY_", extra="ignore", frozen=True)

    produce_byte_rate: int = Field(default=1024 * 1024, ge=MIN_PRODUCE_RATE,
                                   description="Bytes per second an agency may produce, per broker.")
    fetch_byte_rate: int = Field(default=4 * 1024 * 1024, ge=MIN_FETCH_RATE,
                                 description="Bytes per second an agency may fetch, per broker.")
    request_percentage: float = Field(default=50.0, ge=MIN_REQUEST_PERCENTAGE,
                                      description="Share of one broker thread its requests may use, in %.")

    def quota(self) -> Quota:
        return Quota(self.produce_byte_rate, self.fetch_byte_rate, self.request_percentage)


def quota_defaults() -> Quota:
    """The default agency quotas from `LIAISON_AGENCY_*`, or one ConfigError naming what is wrong."""
    try:
        return QuotaDefaults().quota()
    except ValidationError as exc:
        problems = "; ".join(f"LIAISON_AGENCY_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
                             for err in exc.errors())
        raise ConfigError(f"invalid settings: {problems}") from None


# -- the protocol: aiokafka has DescribeClientQuotas v0 but no AlterClientQuotas -----------------
_ENTITY = Array(("entity_type", String("utf-8")), ("entity_name", String("utf-8")))


class AlterClientQuotasResponse_v0(Response):  # type: ignore[misc]  # aiokafka ships no type hints
    API_KEY = 49
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("entries", Array(("error_code", Int16), ("error_message", String("utf-8")), ("entity", _ENTITY))),
    )


class AlterClientQuotasRequest_v0(RequestStruct):  # type: ignore[misc]  # as above
    API_KEY = 49
    API_VERSION = 0
    RESPONSE_TYPE = AlterClientQuotasResponse_v0
    SCHEMA = Schema(
        ("entries", Array(("entity", _ENTITY),
                          ("ops", Array(("key", String("utf-8")), ("value", Float64), ("remove", Boolean))))),
        ("validate_only", Boolean),
    )


class AlterClientQuotasRequest(Request[AlterClientQuotasRequest_v0]):  # type: ignore[misc]  # as above
    """Set or remove quotas of user entities: `entries` is [(user, [(key, value, remove)])]."""

    API_KEY = 49

    def __init__(self, entries: list[tuple[str, list[tuple[str, float, bool]]]]) -> None:
        self._entries = entries

    def build(self, request_struct_class: type[AlterClientQuotasRequest_v0]) -> AlterClientQuotasRequest_v0:
        return request_struct_class([([(_USER, user)], ops) for user, ops in self._entries], False)


def _fault(doing: str, code: int, message: str | None) -> SecurityAdminError:
    name = getattr(for_code(code), "message", f"error {code}")
    return SecurityAdminError(f"{doing}: {name}: {(message or '').strip()[:160]}".rstrip(": "))


class QuotaAdmin:
    """Reads and changes users' client quotas; needs the admin's settings (others get
    CLUSTER_AUTHORIZATION_FAILED: an agency cannot raise its own quota).

    `start()` / `stop()` are safe to call twice; `async with` does both.
    """

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self._client: AIOKafkaAdminClient | None = None

    async def start(self) -> None:
        if self._client is None:
            client = AIOKafkaAdminClient(**self.settings.kafka_kwargs())
            await client.start()
            self._client = client

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def _send(self, request: Any) -> Any:
        await self.start()
        assert self._client is not None
        # Any broker takes both requests (it forwards changes to the controller).
        return await self._client._send_request(request)

    async def _describe(self, components: list[tuple[str, int, str | None]]) -> dict[str, Quota]:
        response = await self._send(DescribeClientQuotasRequest(components, True))
        if response.error_code:
            raise _fault("reading client quotas", response.error_code, response.error_message)
        found: dict[str, Quota] = {}
        for entity, values in response.entries:
            names = dict(entity)
            if set(names) == {_USER} and names[_USER] is not None:
                found[names[_USER]] = Quota.from_values(dict(values))
        return found

    async def describe(self, user: str) -> Quota:
        """The quotas set for exactly this user (an empty Quota when there are none)."""
        return (await self._describe([(_USER, _MATCH_EXACT, user)])).get(user, Quota())

    async def describe_users(self, users: Iterable[str]) -> dict[str, Quota]:
        """The quotas of each of `users`, from one request."""
        every = await self._describe([(_USER, _MATCH_ANY, None)])
        return {user: every.get(user, Quota()) for user in users}

    async def _alter(self, doing: str, entries: list[tuple[str, list[tuple[str, float, bool]]]]) -> None:
        """Send the changes in requests of `BATCH` users (three records each), all at once."""
        entries = [(user, ops) for user, ops in entries if ops]
        responses = await asyncio.gather(*(self._send(AlterClientQuotasRequest(list(chunk)))
                                           for chunk in chunks(entries, BATCH)))
        for response in responses:
            for code, message, _entity in response.entries:
                if code:
                    raise _fault(doing, code, message)

    async def apply(self, user: str, quota: Quota) -> None:
        """Set the quotas that `quota` sets; the others stay as they are."""
        await self._alter(f"setting the quotas of {user}",
                          [(user, [(key, value, False) for key, value in quota.checked().values().items()])])

    async def delete(self, user: str) -> Quota:
        """Remove every quota of the user (the entity disappears); returns what there was."""
        had = await self.describe(user)
        await self._alter(f"deleting the quotas of {user}",
                          [(user, [(key, 0.0, True) for key in had.values()])])
        return had

    async def ensure(self, users: Iterable[str], defaults: Quota) -> dict[str, tuple[Quota, Quota]]:
        """Give each user the default of every quota it lacks; an operator's own values are kept.

        Returns, per user, (its quotas now, the ones set now).
        """
        wanted = list(users)
        if not wanted:
            return {}
        current = await self.describe_users(wanted)
        missing = {user: quota.missing(defaults.checked()) for user, quota in current.items()}
        await self._alter("setting default quotas",
                          [(user, [(key, value, False) for key, value in added.values().items()])
                           for user, added in missing.items()])
        return {user: (current[user].merged(added), added) for user, added in missing.items()}
