"""A hostile client against the registry on a real broker: big and complex schemas, slow parses, floods.

The size, shape and parse-time limits are tested on the session's plain broker; the failed-login and
per-user limits need users, so they run against the secured broker of the security tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import string
import time
from collections.abc import AsyncIterator, Iterator, MutableMapping
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from liaison.registry_client import basic_auth_header
from liaison.security.acls import REGISTRY, schemas_topic
from liaison.security.credentials import ADMIN
from services.registry.app import RegistryServer
from services.registry.auth import BrokerLogin
from services.registry.settings import RegistrySettings
from tests.integration import test_security as secured
from tests.integration.test_registry import CT, V1, Api, error_code, settings_for
from tests.kafka_helpers import eventually, unique_name

cluster = secured.cluster  # the secured broker, started once for this module
MANY = 200_000  # an element limit high enough for the deliberately slow schemas below


def _names(prefix: str, count: int) -> Iterator[str]:
    """`count` distinct short Avro names: fixed length, so comparing them costs the same."""
    combos = itertools.product(string.ascii_letters, repeat=3)
    return (prefix + "".join(combo) for combo in itertools.islice(combos, count))


def wide_writer(fields: int = 1900) -> str:
    """A registered schema with many fields: within the default limits."""
    return json.dumps({"type": "record", "name": "Wide",
                       "fields": [{"name": name, "type": "int"} for name in _names("w", fields)]})


def slow_candidate(fields: int = 400, aliases: int = 60) -> str:
    """Fields whose aliases all miss the writer's: the Avro checker rebuilds the writer's field map
    for every alias it tries, so checking this against `wide_writer` takes seconds, in < 256 KiB.
    """
    alias = _names("a", fields * aliases)
    return json.dumps({"type": "record", "name": "Wide", "fields": [
        {"name": name, "type": "int", "default": 0, "aliases": list(itertools.islice(alias, aliases))}
        for name in _names("c", fields)]}, separators=(",", ":"))


def slow_to_parse(fields: int = 6500) -> str:
    """A record the Avro parser needs a second or more for (it checks each field name against a list)."""
    return json.dumps({"type": "record", "name": "Slow",
                       "fields": [{"name": name, "type": "int"} for name in _names("f", fields)]},
                      separators=(",", ":"))


def nested(levels: int) -> str:
    schema: object = "int"
    for level in range(levels):
        schema = {"type": "record", "name": f"N{level}", "fields": [{"name": "x", "type": schema}]}
    return json.dumps(schema)


@contextlib.asynccontextmanager
async def registry_with(kafka_bootstrap: str, **limits: Any) -> AsyncIterator[tuple[RegistryServer, Api]]:
    settings = settings_for(kafka_bootstrap, unique_name("t.schemas")).model_copy(update=limits)
    async with RegistryServer(settings, registry=CollectorRegistry()) as server, \
            aiohttp.ClientSession() as http:
        yield server, Api(http, server.url)


def refused(server: RegistryServer, reason: str) -> float:
    """liaison_registry_refused_total{reason} as Prometheus would scrape it."""
    for family in server.metrics.refused.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels == {"reason": reason}:
                return sample.value
    raise AssertionError(f"no refused sample for {reason}")


def refusal_logs(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [event for event in logs if event["event"] == "registry request refused"]


async def test_a_body_over_the_limit_is_refused_before_it_is_parsed(kafka_bootstrap: str) -> None:
    """413 with 41301, by Content-Length or while reading a chunked body; exactly the limit still passes."""
    limit = 64 * 1024
    async with registry_with(kafka_bootstrap, registry_max_body_bytes=limit) as (server, api):
        big = json.dumps({"schema": V1, "doc": "x" * limit}).encode()
        headers = {"Content-Type": CT, "Accept": CT}
        with capture_logs() as logs:
            async with api.http.post(f"{api.base}/subjects/s/versions", data=big, headers=headers) as resp:
                assert resp.status == 413
                assert (await resp.json(content_type=None))["error_code"] == 41301

            async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the cap applies while reading
                for start in range(0, len(big), 8192):
                    yield big[start:start + 8192]

            async with api.http.post(f"{api.base}/compatibility/subjects/s/versions/latest", data=chunks(),
                                     headers=headers) as resp:
                assert resp.status == 413
                body = await resp.json(content_type=None)
                assert (body["error_code"], str(limit) in body["message"]) == (41301, True)

        padded = {"schema": V1, "doc": ""}
        padded["doc"] = "x" * (limit - len(json.dumps(padded)))
        assert len(json.dumps(padded)) == limit
        assert await api("POST", "/subjects/s/versions", padded) == (200, {"id": 1})
        assert refused(server, "body_too_large") == 2
        lines = refusal_logs(logs)
        assert [(e["reason"], e["status"], e["error_code"]) for e in lines] == [
            ("body_too_large", 413, 41301)] * 2
        assert lines[0]["endpoint"] == "/subjects/{subject}/versions"


async def test_too_many_elements_or_too_deep_is_refused_before_avro_sees_it(kafka_bootstrap: str) -> None:
    """422 with Confluent's invalid-schema code on every endpoint that takes a schema."""
    async with registry_with(kafka_bootstrap) as (server, api):
        assert await api.register("s", V1) == (200, {"id": 1})
        wide = json.dumps({"type": "record", "name": "W",
                           "fields": [{"name": f"f{i}", "type": "int"} for i in range(2000)]})
        for path in ("/subjects/s/versions", "/subjects/s", "/compatibility/subjects/s/versions/latest"):
            status, body = await api("POST", path, {"schema": wide})
            assert (status, body["error_code"]) == (422, 42201), path
            assert "more than 2000 elements" in body["message"]
        status, body = await api.register("s", nested(11))  # 33 levels of JSON
        assert (status, body["error_code"]) == (422, 42201)
        assert "deeper than 32" in body["message"]
        assert error_code(await api.register("s", slow_candidate())) == (422, 42201)
        # What stays within the limits is served as before.
        assert await api.register("t", nested(10)) == (200, {"id": 2})
        assert await api.register("u", wide_writer()) == (200, {"id": 3})
        assert refused(server, "schema_too_complex") == 5
        assert await api("GET", "/subjects/s/versions") == (200, [1])


async def test_the_event_loop_answers_while_a_slow_check_runs(kafka_bootstrap: str) -> None:
    """A compatibility check that takes seconds runs in a worker: meanwhile GET /subjects answers fast."""
    async with registry_with(kafka_bootstrap, registry_max_schema_elements=MANY,
                             registry_parse_timeout_s=120.0) as (server, api):
        assert await api.register("wide", wide_writer()) == (200, {"id": 1})
        candidate = slow_candidate()
        assert len(json.dumps({"schema": candidate})) < 256 * 1024
        slow = asyncio.create_task(api("POST", "/compatibility/subjects/wide/versions/latest",
                                       {"schema": candidate}))
        await eventually(lambda: asyncio.sleep(0, server.workers.running), lambda running: running == 1,
                         interval_s=0.01)
        latencies: list[float] = []  # of the GETs sent while a worker was busy with the check
        while not slow.done():
            busy, started = server.workers.running, time.monotonic()
            assert await api("GET", "/subjects") == (200, ["wide"])
            if busy:
                latencies.append(time.monotonic() - started)
            await asyncio.sleep(0.05)
        assert await slow == (200, {"is_compatible": True})
        assert len(latencies) >= 5, latencies  # the check ran for a while, and we were answered during it
        assert max(latencies) < 2.0, latencies


async def test_a_check_past_the_time_limit_is_refused_and_the_next_one_works(kafka_bootstrap: str) -> None:
    """422 naming the time limit; the worker is replaced, so the registry keeps checking schemas."""
    async with registry_with(kafka_bootstrap, registry_max_schema_elements=MANY,
                             registry_parse_timeout_s=2.0) as (server, api):
        assert await api.register("wide", wide_writer()) == (200, {"id": 1})
        path = "/compatibility/subjects/wide/versions/latest"
        with capture_logs() as logs:
            status, body = await api("POST", path, {"schema": slow_candidate()})
        assert (status, body["error_code"]) == (422, 42201)
        assert "longer than 2 s" in body["message"]
        assert [e["reason"] for e in refusal_logs(logs)] == ["parse_timeout"]
        assert refused(server, "parse_timeout") == 1
        assert server.workers.running == 0
        small = {"type": "record", "name": "Wide", "fields": [{"name": "extra", "type": "int", "default": 0}]}
        assert await api("POST", path, {"schema": json.dumps(small)}) == (200, {"is_compatible": True})


async def test_parses_past_the_pending_limit_get_429(kafka_bootstrap: str) -> None:
    """With one parse allowed at a time, a second one meanwhile is refused with Retry-After."""
    async with registry_with(kafka_bootstrap, registry_max_schema_elements=MANY,
                             registry_parse_timeout_s=60.0, registry_parse_max_pending=1) as (server, api):
        assert await api.register("s", V1) == (200, {"id": 1})
        slow = asyncio.create_task(api("POST", "/subjects/s", {"schema": slow_to_parse()}))
        await eventually(lambda: asyncio.sleep(0, server.workers.running), lambda running: running == 1,
                         interval_s=0.01)
        async with api.http.post(f"{api.base}/subjects/s", json={"schema": V1}) as resp:
            assert resp.status == 429
            assert (await resp.json(content_type=None))["error_code"] == 42902
            assert int(resp.headers["Retry-After"]) >= 1
        assert error_code(await slow) == (404, 40403)  # parsed in the end: just not registered
        status, found = await api("POST", "/subjects/s", {"schema": V1})
        assert (status, found["id"]) == (200, 1)
        assert refused(server, "parse_busy") == 1


# -- with users: the secured broker -----------------------------------------------------------


@contextlib.asynccontextmanager
async def secured_registry(cluster: secured.Cluster, **limits: Any) -> AsyncIterator[RegistryServer]:
    """The registry as its own principal, once the broker knows that principal's credential."""
    own = cluster.as_user(REGISTRY)
    user, password = own.basic_auth() or (REGISTRY, "")
    login = BrokerLogin(own)
    await eventually(lambda: login(user, password), bool, timeout_s=60, interval_s=0.5)
    settings = RegistrySettings(**own.model_dump(), registry_port=0, registry_auth=True,
                                registry_topic=schemas_topic(own.topics), registry_writers=ADMIN,
                                registry_tls_certfile=cluster.tls.server_cert,
                                registry_tls_keyfile=cluster.tls.server_key, **limits)
    async with RegistryServer(settings, registry=CollectorRegistry()) as server:
        yield server


class Caller:
    """GET /subjects as some user over HTTPS; returns (status, error_code or None, Retry-After or None)."""

    def __init__(self, cluster: secured.Cluster, server: RegistryServer, http: aiohttp.ClientSession) -> None:
        self.cluster, self.server, self.http = cluster, server, http
        tls = cluster.as_user("NL-KLPD", registry_url=server.url).ssl_context()
        assert tls is not None
        self.tls = tls

    def password(self, user: str) -> str:
        credential = self.cluster.as_user(user).basic_auth()
        assert credential is not None
        return credential[1]

    async def __call__(self, agency: str, password: str) -> tuple[int, int | None, str | None]:
        headers = {"Authorization": basic_auth_header(self.cluster.user(agency), password)}
        async with self.http.get(f"{self.server.url}/subjects", ssl=self.tls, headers=headers) as resp:
            body = await resp.json(content_type=None)
            code = body.get("error_code") if isinstance(body, dict) else None
            return resp.status, code, resp.headers.get("Retry-After")


async def test_failed_logins_are_remembered_then_throttled_per_address(cluster: secured.Cluster) -> None:
    """A repeated wrong password costs one broker login; distinct ones use up the address's bucket, then 429.

    A credential accepted lately keeps working; no password reaches the log.
    """
    limits = {"registry_failed_logins_burst": 3, "registry_failed_logins_per_s": 0.001,
              "registry_failed_login_cache_s": 300.0, "registry_auth_cache_s": 300.0}
    async with secured_registry(cluster, **limits) as server, aiohttp.ClientSession() as http:
        call = Caller(cluster, server, http)
        nl, de = call.password("NL-KLPD"), call.password("DE-BKA")
        assert await call("NL-KLPD", nl) == (200, None, None)
        with capture_logs() as logs:
            # Five times the same wrong password: one failed broker login, so never throttled.
            for _ in range(5):
                assert await call("NL-KLPD", "guess-1") == (401, 40101, None)
            assert await call("NL-KLPD", "guess-2") == (401, 40101, None)
            assert await call("FR-PN", "guess-3") == (401, 40101, None)
            status, code, retry_after = await call("NL-KLPD", "guess-4")
            assert (status, code) == (429, 42903)
            assert retry_after is not None
            assert int(retry_after) >= 1
            assert await call("NL-KLPD", nl) == (200, None, None)  # remembered: no broker login needed
            assert (await call("DE-BKA", de))[:2] == (429, 42903)  # a new login from this address waits
        assert refused(server, "login_throttled") == 2
        lines = refusal_logs(logs)
        assert [(e["reason"], e["status"], e["peer"]) for e in lines] == [
            ("login_throttled", 429, "127.0.0.1")] * 2
        logged = repr(logs)
        for secret in ("guess-", nl, de):
            assert secret not in logged


async def test_a_user_past_the_request_rate_gets_429_and_others_do_not(cluster: secured.Cluster) -> None:
    """Per-user token bucket: the burst passes, the next request gets 42901 with Retry-After."""
    limits = {"registry_user_requests_burst": 5, "registry_user_requests_per_s": 0.001}
    async with secured_registry(cluster, **limits) as server, aiohttp.ClientSession() as http:
        call = Caller(cluster, server, http)
        nl = call.password("NL-KLPD")
        for _ in range(5):
            assert await call("NL-KLPD", nl) == (200, None, None)
        with capture_logs() as logs:
            status, code, retry_after = await call("NL-KLPD", nl)
        assert (status, code) == (429, 42901)
        assert retry_after is not None
        assert int(retry_after) >= 1
        assert await call("DE-BKA", call.password("DE-BKA")) == (200, None, None)
        assert refused(server, "user_rate") == 1
        refusals = [(e["reason"], e["user"]) for e in refusal_logs(logs)]
        assert refusals == [("user_rate", cluster.user("NL-KLPD"))]
        assert nl not in repr(logs)
