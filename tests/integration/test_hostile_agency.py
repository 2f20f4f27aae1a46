"""A hostile agency with a valid credential and any Kafka client cannot stop, flood or hijack the bus."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liaison.codec import Codec
from liaison.contract import ready_codec
from liaison.core.runner import ShutdownSignal
from liaison.core.settings import KafkaSettings
from liaison.registry_client import RegistryClient
from liaison.sdk import AgencyClient, alert, envelope, query, reply
from liaison.security.acls import ROUTER
from services.router.app import Router
from services.router.settings import RouterSettings
from tests.bus_harness import Bus, running_bus
from tests.integration.test_security import Cluster, registry_server
from tests.integration.test_security import cluster as secured_cluster
from tests.raw_records import RawHeaderKey, raw_header_keys

Outcomes = dict[tuple[str, int], list[str]]


async def _outcomes(bus: Bus, inputs: int, *, routed: int) -> Outcomes:
    """Per input (topic, offset): 'dead-lettered' and/or 'routed', read until every input has one."""
    letters = await bus.read(bus.topics.deadletter, inputs - routed, timeout_s=60, settle_s=1.0)
    audit = await bus.read(bus.topics.audit, 1, timeout_s=30, settle_s=1.0)
    found: Outcomes = {}
    for _, letter in letters:
        found.setdefault((letter["source_topic"], letter["source_offset"]), []).append("dead-lettered")
    seen: set[tuple[str, int]] = set()
    for _, record in audit:
        where = (record["source_topic"], record["source_offset"])
        if record["decision"] != "REJECTED" and where not in seen:
            seen.add(where)
            found.setdefault(where, []).append("routed")
    return found


async def _raw_send(bus: Bus, topic: str, value: bytes | None, *, key: bytes | None = None,
                    headers: list[tuple[str, bytes | None]] | None = None) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bus.settings.bootstrap_servers,
                                max_request_size=4 * 1024 * 1024)
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, value, key=key, headers=headers)
        return int(meta.offset)
    finally:
        await producer.stop()


async def _read_as(settings: KafkaSettings, topic: str, count: int,
                   until: Callable[[list[bytes]], bool] | None = None) -> list[bytes]:
    """Values of `topic`, read committed from the start as `settings`' principal, until `count`
    (and `until`, if given) are reached."""
    consumer = AIOKafkaConsumer(topic, **settings.kafka_kwargs(), group_id=None, auto_offset_reset="earliest",
                                isolation_level="read_committed", enable_auto_commit=False)
    await consumer.start()
    try:
        values: list[bytes] = []
        async with asyncio.timeout(60):
            while len(values) < count or (until is not None and not until(values)):
                batches = await consumer.getmany(timeout_ms=500)
                values += [r.value for records in batches.values() for r in records]
        return values
    finally:
        await consumer.stop()


def _router_alive(bus: Bus) -> bool:
    return all(not task.done() for _, task, _ in bus.routers)


async def test_odd_records_are_dead_lettered_one_by_one_and_routing_goes_on(kafka_bootstrap: str) -> None:
    """Null header values, a header key that is not UTF-8, thousands of headers, a huge key, an
    oversized value, an empty value and garbage: each is dead-lettered once; the next alert routes."""
    async with running_bus(kafka_bootstrap) as bus:
        topic = bus.topics.outbox("Alert", "FR-PN")
        good = alert(envelope("FR-PN", to=["DE-BKA"], case_id="HOSTILE-1"))
        encoded = bus.codec.encode("Alert", good)
        offsets = [
            await _raw_send(bus, topic, b"\x00\x00\x00\x00\x01garbage", headers=[("k", None)]),
            await _raw_send(bus, topic, encoded, headers=[("x", None), ("y", b"")]),  # routable as is
            await _raw_send(bus, topic, b"\x07" * 100, headers=[(f"h{i}", b"v" * 50) for i in range(3000)]),
            await _raw_send(bus, topic, b"junk", key=b"k" * 600_000),
            await _raw_send(bus, topic, b"\x07" * 1_000_000),
            await _raw_send(bus, topic, None, key=b"no value"),
        ]
        with raw_header_keys():
            bad_key = [(RawHeaderKey(b"\xff\xfe"), b"x")]
            offsets.append(await _raw_send(bus, topic, b"\x01bad", headers=bad_key))
        after = alert(envelope("FR-PN", to=["NL-KLPD"], case_id="HOSTILE-2"))
        await bus.send("Alert", after)

        delivered = await bus.read(bus.topics.inbox("Alert", "NL-KLPD"), 1)
        assert [r["envelope"]["message_id"] for _, r in delivered] == [after["envelope"]["message_id"]]
        outcomes = await _outcomes(bus, len(offsets), routed=1)
        assert {offset: outcomes.get((topic, offset)) for offset in offsets} == {
            offset: ["routed"] if offset == offsets[1] else ["dead-lettered"] for offset in offsets}
        letters = {r["source_offset"]: r for _, r in await bus.read(bus.topics.deadletter, len(offsets) - 1)}
        assert letters[offsets[0]]["headers"] == {"k": b""}
        assert letters[offsets[3]]["key"] == b"k" * 600_000  # kept whole: it fits
        assert letters[offsets[4]]["value"] is None  # too big to keep whole: a minimal dead letter
        assert "sha256" in letters[offsets[4]]["error"]
        assert letters[offsets[4]]["error_code"] == "BAD_MAGIC_BYTE"
        assert letters[offsets[5]]["error_code"] == "TRUNCATED"
        assert "headers unreadable" in letters[offsets[6]]["error"]
        assert _router_alive(bus)


async def test_a_co_recipient_cannot_take_over_a_message_id(kafka_bootstrap: str) -> None:
    """NL-KLPD re-uses the id of a query it received: refused; the answer still reaches the asker.
    The asker's byte-identical re-send is acknowledged and not delivered twice."""
    async with running_bus(kafka_bootstrap) as bus:
        q = query(envelope("FR-PN", to=["DE-BKA", "NL-KLPD"], case_id="HIJACK", handling=["H2"]),
                  "Is this vehicle known?")
        qid = q["envelope"]["message_id"]
        await bus.send("Query", q)
        await bus.read(bus.topics.inbox("Query", "NL-KLPD"), 1)

        stolen = query(envelope("NL-KLPD", to=["DE-BKA"], case_id="HIJACK", message_id=qid), "Mine now")
        await bus.send("Query", stolen)
        rejected = [r for _, r in await bus.read(bus.topics.receipts("NL-KLPD"), 1)]
        assert [(r["kind"], r["reason_code"]) for r in rejected] == [("REJECTED", "DUPLICATE_MESSAGE_ID")]
        assert rejected[0]["envelope"]["correlation_id"] is None  # it learns nothing about the id's owner

        await bus.send("Query", q)  # the asker's honest retry: the very same bytes
        acks = [r for _, r in await bus.read(bus.topics.receipts("FR-PN"), 3) if r["kind"] == "ACKNOWLEDGED"]
        assert [a["envelope"]["correlation_id"] for a in acks] == [qid]

        answer = reply(envelope("DE-BKA", correlation_id=qid, case_id="HIJACK"), "NO_HIT")
        await bus.send("Reply", answer)
        to_asker = await bus.read(bus.topics.inbox("Reply", "FR-PN"), 1)
        assert [r["envelope"]["message_id"] for _, r in to_asker] == [answer["envelope"]["message_id"]]
        assert await bus.read(bus.topics.inbox("Reply", "NL-KLPD"), 1, timeout_s=2) == []
        assert len(await bus.read(bus.topics.inbox("Query", "DE-BKA"), 2, timeout_s=3)) == 1

        not_uuid = query(envelope("NL-KLPD", to=["DE-BKA"], message_id=qid.upper()), "Same id, upper case")
        await bus.send("Query", not_uuid)
        codes = [r["reason_code"] for _, r in await bus.read(bus.topics.receipts("NL-KLPD"), 2)]
        assert codes == ["DUPLICATE_MESSAGE_ID", "INVALID_ID"]


async def test_one_input_has_a_bounded_cost(kafka_bootstrap: str) -> None:
    """20,000 made-up addressees or a 400 kB trace id: one dead letter, one receipt, one audit
    record. A broadcast beyond max_recipients is refused whole; one within it causes at most
    3R + H + 5 records."""
    async with running_bus(kafka_bootstrap, router=False) as bus:
        await bus.start_router(max_recipients=8)
        flood = query(envelope("FR-PN", to=[f"XX-A{i}" for i in range(20_000)]), "Anyone?")
        long_trace = alert(envelope("FR-PN", to=["DE-BKA"], trace_id="t" * 400_000))
        wide = alert(envelope("FR-PN", broadcast=True, tlp="CLEAR"))
        within = alert(envelope("FR-PN", to=["DE-BKA", "NL-KLPD", "IT-PS"], tlp="CLEAR"))
        await bus.send("Query", flood)
        await bus.send("Alert", long_trace)
        await bus.send("Alert", wide)
        await bus.send("Alert", within)

        receipts = [r for _, r in await bus.read(bus.topics.receipts("FR-PN"), 6, settle_s=2.0)]
        rejected = sorted(r["reason_code"] for r in receipts if r["kind"] == "REJECTED")
        assert rejected == ["FIELD_TOO_LONG", "TOO_MANY_ADDRESSEES", "TOO_MANY_RECIPIENTS"]
        letters = await bus.read(bus.topics.deadletter, 3, settle_s=2.0)
        assert len(letters) == 3
        audit = [r for _, r in await bus.read(bus.topics.audit, 6, settle_s=2.0)]
        assert sorted(a["reason_code"] for a in audit if a["decision"] == "REJECTED") == rejected
        mid = within["envelope"]["message_id"]
        caused = (len([r for r in receipts if r["envelope"]["correlation_id"] == mid])
                  + len([a for a in audit if a["message_id"] == mid]))
        for agency in ("DE-BKA", "NL-KLPD", "IT-PS"):
            caused += len(await bus.read(bus.topics.inbox("Alert", agency), 1))
        hubs = 2  # INT-IPSG and EU-EUROPOL in deploy/directory.yaml
        assert 9 <= caused <= 3 * 3 + hubs + 5
        assert _router_alive(bus)


_header = st.tuples(st.text(max_size=12), st.one_of(st.none(), st.binary(max_size=16)))
_odd_record = st.fixed_dictionaries({
    "value": st.one_of(st.none(), st.binary(max_size=64),
                       st.binary(max_size=64).map(lambda b: b"\x00\x00\x00\x00\x01" + b)),
    "key": st.one_of(st.none(), st.binary(max_size=32)),
    "headers": st.lists(_header, max_size=6),
    "outbox": st.sampled_from(["Alert", "Query", "Reply"]),
})


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(odd=st.lists(_odd_record, min_size=1, max_size=12))
async def test_any_record_has_exactly_one_outcome(kafka_bootstrap: str, odd: list[dict[str, Any]]) -> None:
    """Whatever bytes, keys and headers land in an outbox, each record is routed or dead-lettered
    exactly once, and a good alert sent after them is delivered."""
    async with running_bus(kafka_bootstrap) as bus:
        sent: list[tuple[str, int]] = []
        for record in odd:
            topic = bus.topics.outbox(record["outbox"], "PL-KGP")
            key = record["key"] if record["value"] is not None else record["key"] or b"k"
            sent.append((topic, await _raw_send(bus, topic, record["value"], key=key,
                                                headers=record["headers"])))
        good = alert(envelope("PL-KGP", to=["DE-BKA"]))
        await bus.send("Alert", good)
        delivered = await bus.read(bus.topics.inbox("Alert", "DE-BKA"), 1)
        assert [r["envelope"]["message_id"] for _, r in delivered] == [good["envelope"]["message_id"]]
        outcomes = await _outcomes(bus, len(sent), routed=0)
        assert {where: len(outcomes.get(where, [])) for where in sent} == dict.fromkeys(sent, 1)
        assert _router_alive(bus)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A secured broker of this module's own, set up as the security tests set theirs up."""
    yield from secured_cluster.__wrapped__()


@contextlib.asynccontextmanager
async def _secured_router(cluster: Cluster) -> AsyncIterator[tuple[str, Codec, asyncio.Task[None]]]:
    """Registry and router on the secured broker, each as its own principal with its own ACLs."""
    async with registry_server(cluster) as server:
        async with RegistryClient.from_settings(cluster.admin(registry_url=server.url)) as client:
            codec = await ready_codec(client)
        common = {"registry_url": server.url, "metrics_port": 0}
        router = Router(RouterSettings(**cluster.as_user(ROUTER, **common).model_dump(),
                                       group_id=cluster.user(ROUTER),
                                       transactional_prefix=cluster.user(ROUTER), session_timeout_ms=6000))
        shutdown = ShutdownSignal()
        await router.start()
        task = asyncio.create_task(router.run(shutdown))
        try:
            yield server.url, codec, task
        finally:
            shutdown.trigger("test finished")
            await asyncio.wait_for(task, 30)
            await router.stop()


async def test_on_the_secured_bus_an_agency_credential_cannot_stop_the_router(cluster: Cluster) -> None:
    """With only its own credential and aiokafka, FR-PN writes a null header value, a header key that
    is not UTF-8 and garbage into its outbox: all dead-lettered, and DE-BKA's next alert is routed."""
    async with _secured_router(cluster) as (registry_url, codec, task):
        topics = cluster.admin().topics
        producer = AIOKafkaProducer(**cluster.as_user("FR-PN").kafka_kwargs())
        await producer.start()
        try:
            outbox = topics.outbox("Alert", "FR-PN")
            await producer.send_and_wait(outbox, b"\x00\x00\x00\x00\x01x", headers=[("k", None)])
            with raw_header_keys():
                await producer.send_and_wait(outbox, b"\x02", headers=[(RawHeaderKey(b"\xc3\x28"), b"")])
            await producer.send_and_wait(outbox, b"\x00" * 3)
        finally:
            await producer.stop()
        good = alert(envelope("DE-BKA", to=["NL-KLPD"], case_id="SECURED-HOSTILE"))
        async with AgencyClient(cluster.as_user("DE-BKA", registry_url=registry_url), "DE-BKA") as de:
            await de.send("Alert", good)
        admin = cluster.admin()
        inbox = await _read_as(admin, topics.inbox("Alert", "NL-KLPD"), 1)
        assert [codec.decode(value)[1]["envelope"]["message_id"] for value in inbox] == [
            good["envelope"]["message_id"]]
        letters = [codec.decode(v)[1] for v in await _read_as(admin, topics.deadletter, 3)]
        assert sorted(r["error_code"] for r in letters if r["source_topic"] == outbox) == [
            "BAD_MAGIC_BYTE", "TRUNCATED", "TRUNCATED"]
        assert not task.done()


async def _receipts_until(client: AgencyClient, done: Callable[[list[dict[str, Any]]], bool]
                          ) -> list[dict[str, Any]]:
    """An agency's receipts from the start, read with its own credential until `done` holds."""
    found: list[dict[str, Any]] = []
    async with client.receipts(group=f"hostile-{uuid.uuid4().hex[:6]}") as receipts:
        async with asyncio.timeout(60):
            async for receipt in receipts:
                found.append(receipt)
                if done(found):
                    break
    return found


def _has(kind: str, code: str, recipient: str | None = None) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda found: any(r["kind"] == kind and r["reason_code"] == code
                             and (recipient is None or r["recipient"] == recipient) for r in found)


async def test_on_the_secured_bus_ids_bounds_and_groups_hold(cluster: Cluster) -> None:
    """Each agency with its own credential: NL-KLPD cannot take over FR-PN's query id, a query to
    20,000 made-up agencies costs three records, DE-BKA cannot reach a case group it is not in, and
    every refusal is in the audit trail."""
    async with _secured_router(cluster) as (registry_url, codec, task):
        def client(code: str) -> AgencyClient:
            return AgencyClient(cluster.as_user(code, registry_url=registry_url), code)

        async with client("FR-PN") as fr, client("NL-KLPD") as nl, client("DE-BKA") as de:
            q = query(envelope("FR-PN", to=["DE-BKA", "NL-KLPD"], case_id="SEC-HIJACK"), "Known?")
            await fr.send("Query", q)
            async with nl.inbox(types=["Query"], group="hostile") as inbox:
                async with asyncio.timeout(60):
                    _, got = await anext(aiter(inbox))
            assert got["envelope"]["message_id"] == q["envelope"]["message_id"]
            await nl.send("Query", query(envelope("NL-KLPD", to=["DE-BKA"], case_id="SEC-HIJACK",
                                                  message_id=q["envelope"]["message_id"]), "Mine"))
            assert _has("REJECTED", "DUPLICATE_MESSAGE_ID")(
                await _receipts_until(nl, _has("REJECTED", "DUPLICATE_MESSAGE_ID")))

            flood = query(envelope("FR-PN", to=[f"XX-A{i}" for i in range(20_000)]), "Anyone?")
            await fr.send("Query", flood)
            await de.send("Alert", alert(envelope("DE-BKA", groups=["JIT-ORION"], tlp="GREEN")))
            assert _has("REJECTED", "TOO_MANY_ADDRESSEES")(
                await _receipts_until(fr, _has("REJECTED", "TOO_MANY_ADDRESSEES")))
            probe = _has("DENIED", "UNKNOWN_RECIPIENT", "group:JIT-ORION")
            assert probe(await _receipts_until(de, probe))

        admin = cluster.admin()
        wanted = {("NL-KLPD", "DUPLICATE_MESSAGE_ID"), ("FR-PN", "TOO_MANY_ADDRESSEES"),
                  ("DE-BKA", "NOT_A_GROUP_MEMBER")}

        def refusals(values: list[bytes]) -> set[tuple[str, str]]:
            return {(a["originator"], a["reason_code"]) for a in (codec.decode(v)[1] for v in values)
                    if a["decision"] in ("REJECTED", "DENIED")}

        audit = await _read_as(admin, admin.topics.audit, 5, until=lambda values: wanted <= refusals(values))
        assert wanted <= refusals(audit)
        assert not task.done()


async def test_a_sender_learns_only_what_it_may_know(kafka_bootstrap: str) -> None:
    """A non-member addressing a case group gets the answer an unknown name gets, and no member
    names; a recipient's clearances stay in the audit; a hit is not told to an owner the asker
    restricted; biometric data in a query's criteria is removed for an uncleared recipient."""
    async with running_bus(kafka_bootstrap) as bus:
        probe = alert(envelope("DE-BKA", groups=["JIT-ORION"], tlp="GREEN"))
        unknown = alert(envelope("DE-BKA", groups=["NO-SUCH-TEAM"], tlp="GREEN"))
        await bus.send("Alert", probe)
        await bus.send("Alert", unknown)
        seen = [r for _, r in await bus.read(bus.topics.receipts("DE-BKA"), 2)]
        assert [(r["recipient"], r["kind"], r["reason_code"]) for r in seen] == [
            ("group:JIT-ORION", "DENIED", "UNKNOWN_RECIPIENT"),
            ("group:NO-SUCH-TEAM", "DENIED", "UNKNOWN_RECIPIENT")]
        assert seen[0]["reason"].replace("JIT-ORION", "X") == seen[1]["reason"].replace("NO-SUCH-TEAM", "X")
        for member in ("FR-PN", "ES-CNP", "NL-KLPD"):
            assert await bus.read(bus.topics.inbox("Alert", member), 1, timeout_s=1) == []

        q = query(envelope("FR-PN", to=["DE-BKA", "BR-PF"], restricted=["ES"]), "Prints?",
                  kind="HIT_CHECK", criteria={"fingerprint_ref": "AFIS-77", "plate": "AB-123"})
        await bus.send("Query", q)
        qid = q["envelope"]["message_id"]
        to_brazil = (await bus.read(bus.topics.inbox("Query", "BR-PF"), 1))[0][1]
        assert "AFIS-77" not in str(to_brazil["criteria"]), to_brazil["criteria"]
        to_germany = (await bus.read(bus.topics.inbox("Query", "DE-BKA"), 1))[0][1]
        assert to_germany["criteria"]["fingerprint_ref"] == "AFIS-77"

        hit = reply(envelope("DE-BKA", correlation_id=qid), "HIT", reference="REF-9", data_owner="ES-CNP")
        await bus.send("Reply", hit)
        await bus.read(bus.topics.inbox("Reply", "FR-PN"), 1)
        assert await bus.read(bus.topics.receipts("ES-CNP"), 1, timeout_s=2) == []
        audit = [r for _, r in await bus.read(bus.topics.audit, 5, settle_s=1.0)]
        assert [(a["recipient"], a["decision"], a["reason_code"]) for a in audit
                if a["message_id"] == hit["envelope"]["message_id"] and a["recipient"] == "ES-CNP"] == [
            ("ES-CNP", "DENIED", "RESTRICTED_BY_ORIGINATOR")]
        by = {r["recipient"]: r for _, r in await bus.read(bus.topics.receipts("FR-PN"), 2)
              if r["envelope"]["correlation_id"] == qid}
        assert by["BR-PF"]["reason_code"] == "FIELDS_REMOVED"
        assert "clearance" not in (by["BR-PF"]["reason"] or "")
