"""The schema registry on a real broker: REST API, error codes, restarts, and Confluent's own client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext
from prometheus_client import CollectorRegistry

from liaison.errors import ConfigError
from services.registry.app import RegistryServer
from services.registry.settings import RegistrySettings
from tests.kafka_helpers import eventually, unique_name

CT = "application/vnd.schemaregistry.v1+json"
T = TypeVar("T")


def schema_text(*fields: tuple[str, Any], name: str = "Alert", **field_extra: Any) -> str:
    """A record schema with an `id` field plus (name, type) fields."""
    return json.dumps({
        "type": "record", "name": name, "namespace": "liaison.test",
        "fields": [{"name": "id", "type": "string"},
                   *({"name": n, "type": t, **field_extra} for n, t in fields)],
    })


V1 = schema_text()
V2 = schema_text(("tlp", "string"), default="AMBER")  # adds a field with a default: BACKWARD-compatible
BREAKING = schema_text(("severity", "int"))  # adds a field without a default: not BACKWARD-compatible


def settings_for(bootstrap: str, topic: str) -> RegistrySettings:
    return RegistrySettings(bootstrap_servers=bootstrap, registry_port=0, registry_topic=topic,
                            registry_write_timeout_s=20.0)


@pytest.fixture
def topic() -> str:
    return unique_name("t.schemas")


@pytest.fixture
async def registry(kafka_bootstrap: str, topic: str) -> AsyncIterator[RegistryServer]:
    async with RegistryServer(settings_for(kafka_bootstrap, topic), registry=CollectorRegistry()) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class Api:
    """A thin REST caller returning (status, decoded JSON body)."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http, self.base = http, base

    async def __call__(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body)
        async with self.http.request(method, self.base + path, data=data,
                                     headers={"Content-Type": CT, "Accept": CT}) as resp:
            assert resp.content_type == CT, (resp.status, await resp.text())
            return resp.status, await resp.json(content_type=None)

    async def register(self, subject: str, schema: str) -> tuple[int, Any]:
        return await self("POST", f"/subjects/{subject}/versions", {"schema": schema})


@pytest.fixture
def api(registry: RegistryServer, http: aiohttp.ClientSession) -> Api:
    return Api(http, registry.url)


def error_code(reply: tuple[int, Any]) -> tuple[int, int]:
    status, body = reply
    assert set(body) == {"error_code", "message"}, body
    assert body["message"]
    return status, body["error_code"]


async def test_register_lookup_versions_and_delete(api: Api) -> None:
    """Register, lookup, by id, versions, latest, soft and hard delete, in Confluent's shapes."""
    assert await api.register("liaison.Alert", V1) == (200, {"id": 1})
    # The same schema spelled differently is the same schema: same id, no new version.
    assert await api.register("liaison.Alert", json.dumps(json.loads(V1), indent=4)) == (200, {"id": 1})
    # Under another subject it keeps its id.
    assert await api.register("alerts.out.FR-PN-value", V1) == (200, {"id": 1})
    assert await api.register("liaison.Alert", V2) == (200, {"id": 2})

    status, body = await api("GET", "/schemas/ids/1")
    assert status == 200
    assert json.loads(body["schema"]) == json.loads(V1)
    assert "schemaType" not in body
    assert await api("GET", "/schemas/ids/1/versions") == (200, [
        {"subject": "alerts.out.FR-PN-value", "version": 1}, {"subject": "liaison.Alert", "version": 1}])
    assert await api("GET", "/subjects") == (200, ["alerts.out.FR-PN-value", "liaison.Alert"])
    assert await api("GET", "/subjects/liaison.Alert/versions") == (200, [1, 2])

    status, body = await api("POST", "/subjects/liaison.Alert", {"schema": V1})
    assert status == 200
    assert (body["subject"], body["id"], body["version"]) == ("liaison.Alert", 1, 1)
    assert json.loads(body["schema"]) == json.loads(V1)

    status, latest = await api("GET", "/subjects/liaison.Alert/versions/latest")
    assert (status, latest["version"], latest["id"], latest["subject"]) == (200, 2, 2, "liaison.Alert")
    assert await api("GET", "/subjects/liaison.Alert/versions/-1") == (200, latest)
    assert await api("GET", "/subjects/liaison.Alert/versions/2/schema") == (200, json.loads(V2))

    # Soft delete: hidden, still readable with deleted=true, its id still resolves.
    assert await api("DELETE", "/subjects/liaison.Alert/versions/2") == (200, 2)
    assert (await api("GET", "/subjects/liaison.Alert/versions/latest"))[1]["version"] == 1
    assert await api("GET", "/subjects/liaison.Alert/versions") == (200, [1])
    assert await api("GET", "/subjects/liaison.Alert/versions?deleted=true") == (200, [1, 2])
    assert error_code(await api("GET", "/subjects/liaison.Alert/versions/2")) == (404, 40402)
    assert (await api("GET", "/subjects/liaison.Alert/versions/2?deleted=true"))[0] == 200
    assert (await api("GET", "/schemas/ids/2"))[0] == 200
    assert error_code(await api("DELETE", "/subjects/liaison.Alert/versions/2")) == (404, 40406)

    # Hard delete needs a soft delete first.
    path = "/subjects/liaison.Alert/versions/1?permanent=true"
    assert error_code(await api("DELETE", path)) == (404, 40407)
    assert await api("DELETE", "/subjects/liaison.Alert/versions/2?permanent=true") == (200, 2)
    assert error_code(await api("GET", "/schemas/ids/2")) == (404, 40403)

    assert error_code(await api("DELETE", "/subjects/liaison.Alert?permanent=true")) == (404, 40405)
    assert await api("DELETE", "/subjects/liaison.Alert") == (200, [1])
    assert await api("GET", "/subjects") == (200, ["alerts.out.FR-PN-value"])
    assert await api("GET", "/subjects?deleted=true") == (200, ["alerts.out.FR-PN-value", "liaison.Alert"])
    assert error_code(await api("DELETE", "/subjects/liaison.Alert")) == (404, 40404)
    assert await api("DELETE", "/subjects/liaison.Alert?permanent=true") == (200, [1])
    assert error_code(await api("GET", "/subjects/liaison.Alert/versions?deleted=true")) == (404, 40401)
    # Schema 1 lives on under the other subject; a new schema never takes a freed id.
    assert (await api("GET", "/schemas/ids/1"))[0] == 200
    assert await api.register("liaison.Alert", BREAKING) == (200, {"id": 3})


async def test_error_codes(api: Api) -> None:
    """Each refusal carries Confluent's status and error code in an {error_code, message} body."""
    assert error_code(await api("GET", "/subjects/nobody/versions")) == (404, 40401)
    assert error_code(await api("GET", "/subjects/nobody/versions/latest")) == (404, 40401)
    assert error_code(await api("POST", "/subjects/nobody", {"schema": V1})) == (404, 40401)
    assert error_code(await api("GET", "/schemas/ids/4242")) == (404, 40403)

    assert await api.register("s", V1) == (200, {"id": 1})
    assert error_code(await api("GET", "/subjects/s/versions/7")) == (404, 40402)
    assert error_code(await api("POST", "/subjects/s", {"schema": V2})) == (404, 40403)

    for bad in ("0", "abc", "-2", str(2**31)):
        assert error_code(await api("GET", f"/subjects/s/versions/{bad}")) == (422, 42202), bad
    assert error_code(await api.register("s", "{not json")) == (422, 42201)
    assert error_code(await api.register("s", '{"type": "record", "name": "X"}')) == (422, 42201)
    assert error_code(await api.register("s", schema_text(("n", "int"), default="seven"))) == (422, 42201)
    status, body = await api("POST", "/subjects/s/versions",
                             {"schema": 'syntax = "proto3"; message M {}', "schemaType": "PROTOBUF"})
    assert (status, body["error_code"]) == (422, 42201)
    assert "AVRO" in body["message"]
    assert error_code(await api("POST", "/subjects/s/versions", {"schemaType": "AVRO"})) == (422, 42201)
    assert error_code(await api("PUT", "/config", {"compatibility": "SIDEWAYS"})) == (422, 42203)
    assert error_code(await api("PUT", "/config/s", {})) == (422, 42203)

    status, body = await api.register("s", BREAKING)
    assert (status, body["error_code"]) == (409, 409)
    assert "severity" in body["message"]
    # Nothing was written by the refusals.
    assert await api("GET", "/subjects/s/versions") == (200, [1])
    # Explicit references to other subjects are refused rather than silently ignored; empty ones are fine.
    reference = {"name": "liaison.test.Other", "subject": "other", "version": 1}
    assert error_code(await api("POST", "/subjects/s/versions",
                                {"schema": V1, "references": [reference]})) == (422, 42201)
    assert await api("POST", "/subjects/s/versions", {"schema": V1, "references": []}) == (200, {"id": 1})


async def test_unknown_routes_and_content_types_answer_in_json(api: Api, http: aiohttp.ClientSession) -> None:
    """The router's own 404/405 and a wrong content type still come back as error bodies."""
    assert error_code(await api("GET", "/nothing/here")) == (404, 404)
    assert error_code(await api("PATCH", "/config")) == (405, 405)
    async with http.post(api.base + "/subjects/s/versions", data="schema",
                         headers={"Content-Type": "text/plain"}) as resp:
        assert resp.status == 415
        assert (await resp.json(content_type=None))["error_code"] == 415
    # application/json is accepted as well as Confluent's own type.
    async with http.post(api.base + "/subjects/s/versions", json={"schema": V1}) as resp:
        assert (resp.status, await resp.json(content_type=None)) == (200, {"id": 1})


async def test_config_global_and_per_subject(api: Api) -> None:
    """Global and subject levels: set, read (with defaultToGlobal), delete back to the fallback."""
    assert await api("GET", "/config") == (200, {"compatibilityLevel": "BACKWARD"})
    assert await api("PUT", "/config", {"compatibility": "FULL"}) == (200, {"compatibility": "FULL"})
    assert await api("GET", "/config") == (200, {"compatibilityLevel": "FULL"})

    assert error_code(await api("GET", "/config/liaison.Query")) == (404, 40408)
    assert await api("GET", "/config/liaison.Query?defaultToGlobal=true") == (
        200, {"compatibilityLevel": "FULL"})
    assert await api("PUT", "/config/liaison.Query", {"compatibility": "none"}) == (
        200, {"compatibility": "NONE"})
    assert await api("GET", "/config/liaison.Query") == (200, {"compatibilityLevel": "NONE"})
    assert await api("GET", "/config") == (200, {"compatibilityLevel": "FULL"})

    assert await api("DELETE", "/config/liaison.Query") == (200, {"compatibilityLevel": "NONE"})
    assert error_code(await api("GET", "/config/liaison.Query")) == (404, 40408)
    assert error_code(await api("DELETE", "/config/liaison.Query")) == (404, 40401)
    assert await api("DELETE", "/config") == (200, {"compatibilityLevel": "FULL"})
    assert await api("GET", "/config") == (200, {"compatibilityLevel": "BACKWARD"})


async def test_incompatible_change_refused_under_backward_accepted_under_none(api: Api) -> None:
    """BACKWARD refuses a field without default (409), the compatibility check says why, NONE lets it in."""
    assert await api.register("liaison.Reply", V1) == (200, {"id": 1})
    assert error_code(await api.register("liaison.Reply", BREAKING)) == (409, 409)

    path = "/compatibility/subjects/liaison.Reply/versions/latest"
    assert await api("POST", path, {"schema": BREAKING}) == (200, {"is_compatible": False})
    status, body = await api("POST", path + "?verbose=true", {"schema": BREAKING})
    assert (status, body["is_compatible"]) == (200, False)
    assert any("severity" in m and "reader_field_missing_default_value" in m for m in body["messages"])
    assert await api("POST", path + "?verbose=true", {"schema": V2}) == (
        200, {"is_compatible": True, "messages": []})
    assert error_code(await api("POST", "/compatibility/subjects/liaison.Reply/versions/5",
                                {"schema": V2})) == (404, 40402)
    assert error_code(await api("POST", "/compatibility/subjects/nobody/versions/latest",
                                {"schema": V2})) == (404, 40401)

    assert (await api("PUT", "/config/liaison.Reply", {"compatibility": "NONE"}))[0] == 200
    assert await api("POST", path, {"schema": BREAKING}) == (200, {"is_compatible": True})
    assert await api.register("liaison.Reply", BREAKING) == (200, {"id": 2})
    assert await api("GET", "/subjects/liaison.Reply/versions") == (200, [1, 2])


async def test_transitive_level_checks_every_version(api: Api) -> None:
    """BACKWARD_TRANSITIVE refuses what BACKWARD (latest only) would let in."""
    with_int = schema_text(("alias", "int"))
    back_as_string = schema_text(("alias", "string"), default="")
    assert (await api.register("t", with_int))[0] == 200
    assert (await api.register("t", V1))[0] == 200  # drops alias: fine for BACKWARD
    assert (await api("PUT", "/config/t", {"compatibility": "BACKWARD_TRANSITIVE"}))[0] == 200
    assert error_code(await api.register("t", back_as_string)) == (409, 409)
    assert (await api("PUT", "/config/t", {"compatibility": "BACKWARD"}))[0] == 200
    assert await api.register("t", back_as_string) == (200, {"id": 3})


async def test_restarted_registry_serves_the_same_ids(kafka_bootstrap: str, topic: str,
                                                      http: aiohttp.ClientSession) -> None:
    """A new instance on the same topic rebuilds ids, versions, deletions and levels; new ids go higher."""
    settings = settings_for(kafka_bootstrap, topic)
    async with RegistryServer(settings) as first:
        api = Api(http, first.url)
        assert await api.register("a", V1) == (200, {"id": 1})
        assert await api.register("a", V2) == (200, {"id": 2})
        assert await api.register("b", BREAKING) == (200, {"id": 3})
        assert await api("DELETE", "/subjects/b/versions/1") == (200, 1)
        assert await api("DELETE", "/subjects/b/versions/1?permanent=true") == (200, 1)
        assert (await api("PUT", "/config/a", {"compatibility": "FORWARD"}))[0] == 200
        assert await api("DELETE", "/subjects/a/versions/1") == (200, 1)
        before = {path: await api("GET", path) for path in (
            "/subjects", "/subjects/a/versions?deleted=true", "/subjects/a/versions/latest",
            "/subjects/a/versions/1?deleted=true", "/schemas/ids/1", "/schemas/ids/2", "/config/a")}
        # The same object stopped (twice) and started again rebuilds the same state from the topic.
        await first.stop()
        await first.stop()
        await first.start()
        api = Api(http, first.url)
        assert {path: await api("GET", path) for path in before} == before

    async with RegistryServer(settings) as second:
        api = Api(http, second.url)
        after = {path: await api("GET", path) for path in before}
        assert after == before
        assert error_code(await api("GET", "/schemas/ids/3")) == (404, 40403)
        assert error_code(await api("GET", "/subjects/a/versions/1")) == (404, 40402)
        # Id 3 was hard-deleted but is never handed out again.
        assert await api.register("c", schema_text(name="Query")) == (200, {"id": 4})
        assert await api.register("a", V2) == (200, {"id": 2})


async def test_second_instance_follows_the_first(kafka_bootstrap: str, topic: str,
                                                 http: aiohttp.ClientSession) -> None:
    """Two instances on one topic: what one writes, the other serves, and ids keep counting up."""
    settings = settings_for(kafka_bootstrap, topic)
    async with RegistryServer(settings) as one, RegistryServer(settings) as two:
        api_one, api_two = Api(http, one.url), Api(http, two.url)
        assert await api_one.register("a", V1) == (200, {"id": 1})
        await eventually(lambda: api_two("GET", "/schemas/ids/1"), lambda reply: reply[0] == 200)
        # The second one catches up with the topic's end before it picks an id.
        assert await api_two.register("b", BREAKING) == (200, {"id": 2})
        assert await api_two.register("a", V1) == (200, {"id": 1})


async def test_concurrent_registrations_get_distinct_ids_and_versions(api: Api) -> None:
    """Registrations racing in one process are serialised: no id or version is handed out twice."""
    assert (await api("PUT", "/config/many", {"compatibility": "NONE"}))[0] == 200
    schemas = [schema_text(name=f"Kind{i}") for i in range(12)]
    replies = await asyncio.gather(*(api.register("many", s) for s in schemas))
    ids = sorted(body["id"] for status, body in replies if status == 200)
    assert ids == list(range(1, 13))
    assert await api("GET", "/subjects/many/versions") == (200, list(range(1, 13)))
    for schema, (_, body) in zip(schemas, replies, strict=True):
        status, found = await api("POST", "/subjects/many", {"schema": schema})
        assert (status, found["id"]) == (200, body["id"])


async def test_topic_is_created_compacted_and_a_wrong_one_refused(kafka_bootstrap: str, topic: str,
                                                                 registry: RegistryServer) -> None:
    """The registry creates its topic compacted with one partition, and will not start on a deleting one."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
        assert len(described["partitions"]) == 1
        [answer] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"cleanup.policy": None})])
        [entry] = answer.to_object()["resources"][0]["config_entries"]
        assert entry["config_value"] == "compact"

        deleting = unique_name("t.schemas.delete")
        await admin.create_topics([NewTopic(deleting, 1, 1, topic_configs={"cleanup.policy": "delete"})])
    finally:
        await admin.close()
    server = RegistryServer(settings_for(kafka_bootstrap, deleting))
    with pytest.raises(ConfigError, match=r"cleanup\.policy=delete"):
        await server.start()
    await server.stop()  # safe after a failed start, and twice
    await server.stop()


async def test_unreadable_records_are_skipped_and_counted(kafka_bootstrap: str, topic: str,
                                                          http: aiohttp.ClientSession) -> None:
    """Garbage in the topic does not stop the registry: it is skipped, counted, and the rest still served."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        async with RegistryServer(settings_for(kafka_bootstrap, topic)) as first:
            assert await Api(http, first.url).register("a", V1) == (200, {"id": 1})
        await producer.send_and_wait(topic, key=b"not json", value=b"{}")
        await producer.send_and_wait(topic, key=b'{"keytype":"MYSTERY","magic":0}', value=b"{}")
    finally:
        await producer.stop()
    metrics = CollectorRegistry()
    async with RegistryServer(settings_for(kafka_bootstrap, topic), registry=metrics) as second:
        assert metrics.get_sample_value("liaison_registry_bad_records_total") == 2
        assert (await Api(http, second.url)("GET", "/schemas/ids/1"))[0] == 200
        assert metrics.get_sample_value("liaison_registry_schemas") == 1


async def test_metrics_count_requests_by_route_pattern(kafka_bootstrap: str, topic: str,
                                                       http: aiohttp.ClientSession) -> None:
    """Requests are counted per route pattern (never the raw subject) and status; the gauge counts schemas."""
    metrics = CollectorRegistry()
    async with RegistryServer(settings_for(kafka_bootstrap, topic), registry=metrics) as server:
        api = Api(http, server.url)
        await api.register("one", V1)
        await api.register("two", V1)
        await api.register("two", BREAKING)
        await api("GET", "/subjects/two/versions/9")

        def count(endpoint: str, status: str) -> float | None:
            return metrics.get_sample_value("liaison_registry_requests_total",
                                            {"endpoint": endpoint, "status": status})

        assert count("/subjects/{subject}/versions", "200") == 2
        assert count("/subjects/{subject}/versions", "409") == 1
        assert count("/subjects/{subject}/versions/{version}", "404") == 1
        assert metrics.get_sample_value("liaison_registry_schemas") == 1


async def _threaded(call: Callable[[], T]) -> T:
    """Confluent's client is synchronous: keep it off the event loop that serves it."""
    return await asyncio.to_thread(call)


async def test_confluent_client_and_serdes_against_our_registry(registry: RegistryServer) -> None:
    """confluent-kafka's SchemaRegistryClient and Avro serdes, written by others, work against this server."""
    client = SchemaRegistryClient({"url": registry.url})
    try:
        subject = "liaison.Alert"
        schema_id = await _threaded(lambda: client.register_schema(subject, Schema(V1, "AVRO")))
        assert schema_id == 1
        fetched = await _threaded(lambda: client.get_schema(schema_id))
        assert json.loads(fetched.schema_str) == json.loads(V1)
        latest = await _threaded(lambda: client.get_latest_version(subject))
        assert (latest.schema_id, latest.version, latest.subject) == (1, 1, subject)
        found = await _threaded(lambda: client.lookup_schema(subject, Schema(V1, "AVRO")))
        assert (found.schema_id, found.version) == (1, 1)

        assert await _threaded(lambda: client.test_compatibility(subject, Schema(V2, "AVRO"))) is True
        assert await _threaded(lambda: client.test_compatibility(subject, Schema(BREAKING, "AVRO"))) is False
        with pytest.raises(SchemaRegistryError) as refused:
            await _threaded(lambda: client.register_schema(subject, Schema(BREAKING, "AVRO")))
        assert (refused.value.http_status_code, refused.value.error_code) == (409, 409)

        await _threaded(lambda: client.set_compatibility(subject_name=subject, level="NONE"))
        assert await _threaded(lambda: client.get_compatibility(subject)) == "NONE"
        assert await _threaded(lambda: client.test_compatibility(subject, Schema(BREAKING, "AVRO"))) is True
        assert await _threaded(lambda: client.register_schema(subject, Schema(BREAKING, "AVRO"))) == 2
        assert await _threaded(lambda: client.get_versions(subject)) == [1, 2]
        with pytest.raises(SchemaRegistryError) as missing:
            await _threaded(lambda: client.get_version("nobody", 1))
        assert missing.value.error_code == 40401

        # The serdes: register on first use, write the Confluent wire format, read it back by id.
        serializer = AvroSerializer(client, V2)
        deserializer = AvroDeserializer(client)
        context = SerializationContext("alerts.out.FR-PN", MessageField.VALUE)
        value = {"id": "a-1", "tlp": "RED"}
        wire = await _threaded(lambda: serializer(value, context))
        assert wire[0] == 0
        written_id = int.from_bytes(wire[1:5], "big")
        assert written_id == 3
        assert await _threaded(lambda: deserializer(wire, context)) == value
        assert await _threaded(client.get_subjects) == ["alerts.out.FR-PN-value", subject]
    finally:
        client.close()
