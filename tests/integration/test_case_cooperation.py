"""Case-based cooperation end to end on a secured broker: every agency, officer and service logs in
as itself with exactly its ACLs, and the router applies the four rules.

- a joint team formed by its members, addressed by members only, a late member kept from earlier
  content, and closed with its members told;
- a liaison officer posted with its own credential and inbox, copied on its cases, sending for its
  agency, and shut out of the broker when revoked or when its delegation expires;
- a designated authority's request to another state's SPOC copied to its own SPOC (Art. 4(1)),
  and the copy skipped, on record, when the sender states an Art. 4(2) ground;
- a fingerprint HIT: the DATA_REQUEST citing it is held until the data owner confirms the match.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer

from liaison import officers
from liaison.codec import Codec
from liaison.contract import ready_codec, register_all
from liaison.core.runner import ShutdownSignal
from liaison.core.settings import KafkaSettings
from liaison.onboarding import KafkaAccessControl
from liaison.policy import reasons as R  # short alias: the rules cite many codes
from liaison.provision import DEFAULT_DIRECTORY, provision
from liaison.registry_client import RegistryClient
from liaison.sdk import (
    AgencyClient,
    alert,
    case_group_change,
    envelope,
    invitation_answer,
    match_confirmation,
    query,
    reply,
)
from liaison.security.acls import ROUTER
from liaison.security.admin import SecurityAdmin
from services.delegations.app import Delegations
from services.delegations.settings import DelegationsSettings
from services.router.app import Router
from services.router.settings import RouterSettings
from tests.kafka_helpers import eventually
from tests.secured_harness import Cluster, registry_server, secured_broker

pytestmark = pytest.mark.asyncio(loop_scope="module")

PREFIX = "case."
HOUR_MS = 3_600_000
Record = dict[str, Any]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with secured_broker() as secured:
        found = Cluster.on(secured, PREFIX)
        asyncio.run(provision(found.admin(), DEFAULT_DIRECTORY, credentials=found.files))
        yield found


@dataclass
class CaseBus:
    cluster: Cluster
    registry_url: str
    codec: Codec

    def admin(self) -> KafkaSettings:
        return self.cluster.admin(registry_url=self.registry_url)

    def client(self, code: str) -> AgencyClient:
        return AgencyClient(self.cluster.as_user(code, registry_url=self.registry_url), code,
                            codec=self.codec)

    async def records(self, topic: str, wanted: Callable[[Record], bool], *, count: int = 1,
                      timeout_s: float = 60.0) -> list[Record]:
        """Records of `topic` (read from the start as the admin) for which `wanted` holds, once
        `count` of them arrived and the topic was read to its end then: the router writes all
        that one message causes in one transaction, so none of it is missing; fails at the deadline."""
        consumer = AIOKafkaConsumer(topic, **self.admin().kafka_kwargs(), group_id=None,
                                    auto_offset_reset="earliest", isolation_level="read_committed",
                                    enable_auto_commit=False)
        await consumer.start()
        found: list[Record] = []
        try:
            async with asyncio.timeout(timeout_s):
                while len(found) < count:
                    batches = await consumer.getmany(timeout_ms=300)
                    found += self._matching(batches, wanted)
                ends = await consumer.end_offsets(list(consumer.assignment()))
                while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
                    found += self._matching(await consumer.getmany(timeout_ms=300), wanted)
        except TimeoutError:
            pytest.fail(f"{topic}: {len(found)} of {count} wanted records within {timeout_s} s: {found}")
        finally:
            await consumer.stop()
        return found

    def _matching(self, batches: dict[Any, list[Any]], wanted: Callable[[Record], bool]) -> list[Record]:
        values = [self.codec.decode(r.value)[1] for records in batches.values() for r in records]
        return [v for v in values if wanted(v)]

    async def audit(self, message_id: str) -> list[Record]:
        """Every audit record of one message."""
        return await self.records(self.cluster.admin().topics.audit, lambda a: a["message_id"] == message_id)

    async def inbox(self, message_type: str, code: str, message_id: str) -> Record:
        topic = self.cluster.admin().topics.inbox(message_type, code)
        (found,) = await self.records(topic, lambda r: r["envelope"]["message_id"] == message_id)
        return found

    async def receipts(self, code: str, wanted: Callable[[Record], bool], *, count: int = 1) -> list[Record]:
        return await self.records(self.cluster.admin().topics.receipts(code), wanted, count=count)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bus(cluster: Cluster) -> AsyncIterator[CaseBus]:
    """Registry, router (as itself) and the delegations service (as the admin) on the secured bus."""
    async with registry_server(cluster) as server:
        async with RegistryClient.from_settings(cluster.admin(registry_url=server.url)) as client:
            await register_all(client)
            codec = await ready_codec(client)
        common = {"registry_url": server.url, "metrics_port": 0}
        router = Router(RouterSettings(**cluster.as_user(ROUTER, **common).model_dump(),
                                       group_id=cluster.user(ROUTER),
                                       transactional_prefix=cluster.user(ROUTER),
                                       session_timeout_ms=6000, batch_timeout_ms=100,
                                       case_group_check_s=0.5))
        delegations = Delegations(DelegationsSettings(**cluster.admin(**common).model_dump()),
                                  access=KafkaAccessControl(cluster.files))
        shutdown = ShutdownSignal()
        await router.start()
        await delegations.start()
        tasks = [asyncio.create_task(router.run(shutdown)), asyncio.create_task(delegations.run(shutdown))]
        try:
            yield CaseBus(cluster, server.url, codec)
        finally:
            shutdown.trigger("test finished")
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
            await delegations.stop()
            await router.stop()


@contextlib.asynccontextmanager
async def clients(bus: CaseBus, *codes: str) -> AsyncIterator[dict[str, AgencyClient]]:
    async with contextlib.AsyncExitStack() as stack:
        yield {code: await stack.enter_async_context(bus.client(code)) for code in codes}


def _id(record: Record) -> str:
    return str(record["envelope"]["message_id"])


def _decisions(audit: list[Record]) -> dict[str | None, tuple[str, str | None]]:
    return {a["recipient"]: (a["decision"], a["reason_code"]) for a in audit}


async def test_a_joint_team_is_formed_addressed_by_members_and_closed(bus: CaseBus) -> None:
    async with clients(bus, "FR-PN", "DE-BKA", "ES-CNP", "IT-PS", "NL-KLPD") as c:
        propose = query(envelope("FR-PN", to=["DE-BKA", "ES-CNP", "IT-PS"], case_id="NORTE",
                                 purpose="Joint investigation team on a trafficking network",
                                 legal_basis="EU MLA Convention 2000 Art. 13"),
                        "Join the joint investigation team JIT-NORTE?",
                        case_group=case_group_change("JIT-NORTE", "PROPOSE", ends_at=int(time.time() * 1000)
                                                     + 30 * 24 * HOUR_MS))
        await c["FR-PN"].send("Query", propose)
        invitation = await bus.inbox("Query", "IT-PS", _id(propose))
        assert invitation["case_group"]["action"] == "PROPOSE"
        for code, accept in (("DE-BKA", True), ("ES-CNP", True), ("IT-PS", False)):
            await c[code].send("Reply", invitation_answer(envelope(code, correlation_id=_id(propose)),
                                                          accept=accept))
        answers = await bus.records(bus.cluster.admin().topics.audit, lambda a: a["decision"] == "RECORDED"
                                    and a["correlation_id"] == _id(propose), count=3)
        assert sorted(a["reason_code"] for a in answers) == sorted(
            [R.CASE_GROUP_JOINED, R.CASE_GROUP_JOINED, R.CASE_GROUP_DECLINED])

        news = alert(envelope("DE-BKA", groups=["JIT-NORTE"], case_id="NORTE"))
        await c["DE-BKA"].send("Alert", news)
        assert _decisions(await bus.audit(_id(news))) == {
            "FR-PN": ("DELIVERED", None), "ES-CNP": ("DELIVERED", None)}  # IT-PS declined: not a member
        outsider = alert(envelope("IT-PS", groups=["JIT-NORTE"], case_id="NORTE"))
        await c["IT-PS"].send("Alert", outsider)
        (refused,) = await bus.receipts("IT-PS", lambda r: r["envelope"]["correlation_id"] == _id(outsider))
        # the outsider learns no more than of a name that does not exist; the audit says why
        assert (refused["kind"], refused["reason_code"]) == ("DENIED", R.UNKNOWN_RECIPIENT)
        assert [a["reason_code"] for a in await bus.audit(_id(outsider))] == [R.NOT_A_GROUP_MEMBER]

        add = query(envelope("FR-PN", to=["NL-KLPD"], case_id="NORTE"), "Join JIT-NORTE too?",
                    case_group=case_group_change("JIT-NORTE", "ADD"))
        await c["FR-PN"].send("Query", add)
        await bus.inbox("Query", "NL-KLPD", _id(add))
        await c["NL-KLPD"].send("Reply", invitation_answer(envelope("NL-KLPD", correlation_id=_id(add)),
                                                           accept=True))
        await bus.records(bus.cluster.admin().topics.audit, lambda a: a["correlation_id"] == _id(add)
                          and a["reason_code"] == R.CASE_GROUP_JOINED)
        onward = alert(envelope("ES-CNP", groups=["JIT-NORTE"], case_id="NORTE", derived_from=_id(news)))
        await c["ES-CNP"].send("Alert", onward)
        assert _decisions(await bus.audit(_id(onward))) == {
            "FR-PN": ("DELIVERED", None), "DE-BKA": ("DELIVERED", None),
            "NL-KLPD": ("DENIED", R.LATE_MEMBER_NO_CONSENT)}

        close = query(envelope("FR-PN", groups=["JIT-NORTE"], case_id="NORTE"), "The team's work is done.",
                      case_group=case_group_change("JIT-NORTE", "CLOSE"))
        await c["FR-PN"].send("Query", close)
        for code in ("DE-BKA", "ES-CNP", "NL-KLPD"):
            (told,) = await bus.receipts(code, lambda r: r["kind"] == "GROUP_CHANGED"
                                         and r["envelope"]["correlation_id"] == _id(close))
            assert told["reason_code"] == R.CASE_GROUP_CLOSED
        late = alert(envelope("DE-BKA", groups=["JIT-NORTE"], case_id="NORTE"))
        await c["DE-BKA"].send("Alert", late)
        (receipt,) = await bus.receipts("DE-BKA", lambda r: r["envelope"]["correlation_id"] == _id(late))
        assert receipt["reason_code"] == R.GROUP_EXPIRED

    group = await _group(bus, "JIT-NORTE")
    assert (group["status"], sorted(group["members"])) == ("CLOSED", ["DE-BKA", "ES-CNP", "FR-PN", "NL-KLPD"])
    assert [h["action"] for h in group["history"]] == ["PROPOSED", "JOINED", "JOINED", "DECLINED", "INVITED",
                                                       "JOINED", "CLOSED"]


async def test_a_joint_team_past_its_end_date_ends_and_its_members_are_told(bus: CaseBus) -> None:
    async with clients(bus, "DE-BKA", "PL-KGP") as c:
        ends = int(time.time() * 1000) + 4_000
        propose = query(envelope("DE-BKA", to=["PL-KGP"], case_id="BRIEF"), "A short joint team?",
                        case_group=case_group_change("JIT-BRIEF", "PROPOSE", ends_at=ends))
        await c["DE-BKA"].send("Query", propose)
        await bus.inbox("Query", "PL-KGP", _id(propose))
        await c["PL-KGP"].send("Reply", invitation_answer(envelope("PL-KGP", correlation_id=_id(propose)),
                                                          accept=True))
        for code in ("DE-BKA", "PL-KGP"):
            (told,) = await bus.receipts(code, lambda r: r["kind"] == "GROUP_CHANGED"
                                         and r["envelope"]["correlation_id"] == _id(propose))
            assert told["reason_code"] == R.CASE_GROUP_ENDED
            assert told["envelope"]["created_at"] >= ends
    group = await _group(bus, "JIT-BRIEF")
    assert (group["status"], group["history"][-1]["action"]) == ("CLOSED", "ENDED")


async def _group(bus: CaseBus, name: str) -> dict[str, Any]:
    """The group's value in bus.casegroups, as `liaison case-group show` reads it."""
    from liaison.cli.case_group import read_groups  # noqa: PLC0415  # the CLI's own reader

    formed, _ = await read_groups(bus.admin())
    (group,) = [g for g in formed if g.name == name]
    return group.to_value()


async def test_a_liaison_officer_works_a_case_abroad_until_revoked(bus: CaseBus) -> None:
    admin, access = bus.admin(), KafkaAccessControl(bus.cluster.files)
    posted = await officers.post_officer(admin, "FR-PN", "BOGOTA", post="Bogota, Colombia",
                                         cases=["OP-CONDOR"],
                                         countries=["CO"], ends_at=int(time.time() * 1000) + HOUR_MS,
                                         access=access)
    assert posted.in_force
    assert all(posted.topics.values())
    await eventually(lambda: _directory_has(bus, "FR-PN-BOGOTA"), bool)
    async with clients(bus, "CO-PONAL", "FR-PN-BOGOTA") as c:
        tip = query(envelope("CO-PONAL", to=["FR-PN"], case_id="OP-CONDOR"),
                    "Is this courier known in France?")
        await c["CO-PONAL"].send("Query", tip)
        copy = await bus.inbox("Query", "FR-PN-BOGOTA", _id(tip))
        assert copy["envelope"]["copy"] == {"kind": "LIAISON_OFFICER", "addressee": "FR-PN"}
        audited = await bus.audit(_id(tip))
        assert {(a["recipient"], a["officer"]) for a in audited} >= {("FR-PN-BOGOTA", "FR-PN-BOGOTA")}

        answer = reply(envelope("FR-PN", correlation_id=_id(tip), case_id="OP-CONDOR",
                                officer="FR-PN-BOGOTA"),
                       "HIT", information="Known to the Police nationale since 2021.")
        await c["FR-PN-BOGOTA"].send("Reply", answer)
        got = await bus.inbox("Reply", "CO-PONAL", _id(answer))
        assert (got["envelope"]["originator"], got["envelope"]["officer"]) == ("FR-PN", "FR-PN-BOGOTA")
        (sent,) = await bus.audit(_id(answer))
        assert sent["officer"] == "FR-PN-BOGOTA"

    user = bus.cluster.user("FR-PN-BOGOTA")
    security = SecurityAdmin(bus.cluster.admin())
    assert await security.grants_of(user)
    await officers.revoke_officer(admin, "FR-PN-BOGOTA", access=access)
    assert not await security.grants_of(user)
    assert not await security.users_with_credentials([user])


async def _directory_has(bus: CaseBus, code: str) -> bool:
    listed = await officers.list_officers(bus.admin())
    return any(v.officer.code == code and v.in_force for v in listed)


async def test_an_expired_delegation_loses_its_broker_access_without_anyone_acting(bus: CaseBus) -> None:
    admin, access = bus.admin(), KafkaAccessControl(bus.cluster.files)
    await officers.post_officer(admin, "DE-BKA", "MADRID", countries=["ES"],
                                ends_at=int(time.time() * 1000) + 3_000, access=access)
    user = bus.cluster.user("DE-BKA-MADRID")
    security = SecurityAdmin(bus.cluster.admin())
    assert await security.users_with_credentials([user]) == {user}
    async def access() -> tuple[set[Any], set[str]]:
        return await security.grants_of(user), await security.users_with_credentials([user])

    await eventually(access, lambda found: found == (set(), set()), timeout_s=30, interval_s=0.5)


async def test_a_request_to_another_states_spoc_is_copied_to_the_senders_spoc(bus: CaseBus) -> None:
    async with clients(bus, "FR-GN") as c:
        ask = query(envelope("FR-GN", to=["DE-BKA"], case_id="SPOC-1"), "Is this vehicle known?")
        await c["FR-GN"].send("Query", ask)
        copy = await bus.inbox("Query", "FR-PN", _id(ask))
        assert copy["envelope"]["copy"] == {"kind": "SPOC_OWN", "addressee": "DE-BKA"}
        original = await bus.inbox("Query", "DE-BKA", _id(ask))
        assert original["envelope"]["copy"] is None
        receipts = await bus.receipts("FR-GN", lambda r: r["envelope"]["correlation_id"] == _id(ask), count=2)
        assert {r["recipient"]: r["reason_code"] for r in receipts}["FR-PN"] == R.SPOC_COPY_ART_4_1

        secret = query(envelope("FR-GN", to=["DE-BKA"], case_id="SPOC-2",
                                spoc_copy_waiver="HIGHLY_SENSITIVE_INVESTIGATION"), "Is this person known?")
        await c["FR-GN"].send("Query", secret)
        decisions = _decisions(await bus.audit(_id(secret)))
        assert decisions == {"DE-BKA": ("DELIVERED", None), "FR-PN": ("WAIVED", R.SPOC_COPY_WAIVED)}


async def test_a_fingerprint_hit_is_confirmed_by_a_person_before_the_data_follows(bus: CaseBus) -> None:
    async with clients(bus, "FR-PN", "DE-BKA") as c:
        check = query(envelope("FR-PN", to=["DE-BKA"], case_id="PRUM-7", categories=["FINGERPRINT"]),
                      "Fingerprint search", kind="HIT_CHECK", criteria={"fingerprint_ref": "AFIS-FR-7"})
        await c["FR-PN"].send("Query", check)
        await bus.inbox("Query", "DE-BKA", _id(check))
        hit = reply(envelope("DE-BKA", correlation_id=_id(check), case_id="PRUM-7"), "HIT",
                    reference="AFIS-DE-7")
        await c["DE-BKA"].send("Reply", hit)
        (pending,) = [a for a in await bus.audit(_id(hit)) if a["decision"] == "RECORDED"]
        assert pending["reason_code"] == R.MATCH_PENDING

        request = query(envelope("FR-PN", to=["DE-BKA"], case_id="PRUM-7"), "Your data on the hit",
                        kind="DATA_REQUEST", reference="AFIS-DE-7")
        await c["FR-PN"].send("Query", request)
        (held,) = await bus.receipts("FR-PN", lambda r: r["envelope"]["correlation_id"] == _id(request))
        assert (held["kind"], held["reason_code"]) == ("HELD_FOR_REVIEW", R.MATCH_NOT_CONFIRMED)

        confirm = reply(envelope("DE-BKA", correlation_id=_id(check), case_id="PRUM-7"), "HIT",
                        reference="AFIS-DE-7", confirmation=match_confirmation("Insp. Weber, AFIS unit"))
        await c["DE-BKA"].send("Reply", confirm)
        released = await bus.inbox("Query", "DE-BKA", _id(request))
        assert released["reference"] == "AFIS-DE-7"
        recorded = [a for a in await bus.audit(_id(confirm)) if a["decision"] == "RECORDED"]
        assert [a["reason_code"] for a in recorded] == [R.MATCH_CONFIRMED]
        assert "Insp. Weber" in recorded[0]["reason"]
