"""`make demo`: a realistic multi-agency scenario on a local bus, then what happened, in plain words.

Every rule of the sharing policy is shown at work: hub review of a Red Notice with a restricted
country, a TLP:RED bilateral exchange, an urgent query with its legal deadline, biometric data to
partners without an agreement, a FLAG on an alert, a neutrality hold, and bad input dead-lettered
while traffic flows. A second chapter shows case-based cooperation: a joint team formed on the
bus and closed, a liaison officer working a case abroad, a request with its SPOC copy, and a
fingerprint hit confirmed by a person before the data follows. The bus is left running for the
user to explore with the CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from liaison import officers
from liaison.cli.output import Out
from liaison.codec import Codec
from liaison.contract import ready_codec
from liaison.core.logs import kafka_client_logs_silenced
from liaison.core.settings import KafkaSettings
from liaison.errors import LiaisonError
from liaison.onboarding import AccessControl, access_control
from liaison.registry_client import RegistryClient
from liaison.sdk import (
    alert,
    case_group_change,
    envelope,
    invitation_answer,
    match_confirmation,
    query,
    reply,
)
from liaison.sdk.builders import subject
from liaison.security.acls import agency_group_prefix

WAIT_S = 30.0


@dataclass
class Step:
    title: str
    message_type: str
    record: dict[str, Any]
    outbox_of: str | None = None

    @property
    def message_id(self) -> str:
        return str(self.record["envelope"]["message_id"])


@dataclass
class Observer:
    """Follows `bus.audit` and `bus.deadletter` and indexes what the bus decided."""

    settings: KafkaSettings
    codec: Codec
    decisions: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def follow(self, since_ms: int) -> None:
        names = self.settings.topics
        consumer = AIOKafkaConsumer(
            names.audit, names.deadletter, **self.settings.kafka_kwargs(), group_id=None,
            isolation_level="read_committed", auto_offset_reset="latest", fetch_max_wait_ms=50)
        await consumer.start()
        try:
            await consumer.seek_to_end()  # only what this run causes
            while True:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for rec in records:
                        name, value = self.codec.decode(rec.value)
                        if name == "AuditRecord":
                            self.decisions[value["message_id"]].append(value)
                        elif value["failed_at"] >= since_ms:
                            self.dead_letters.append(value)
                        self._changed.set()
        finally:
            await consumer.stop()

    async def decided(self, message_id: str, *, count: int = 1) -> list[dict[str, Any]]:
        deadline = time.monotonic() + WAIT_S
        while len(self.decisions.get(message_id, [])) < count:
            if time.monotonic() > deadline:
                raise LiaisonError(f"the bus did not decide on message {message_id} within {WAIT_S:.0f} s;"
                                   " see `liaison status` and .run/logs/router.log")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), 0.5)
        return self.decisions[message_id]

    async def dead_lettered(self, count: int) -> None:
        deadline = time.monotonic() + WAIT_S
        while len(self.dead_letters) < count and time.monotonic() < deadline:
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), 0.5)


def _scenario_first() -> list[Step]:
    red_notice = alert(envelope(
        "FR-PN", groups=["EU"], to=["US-FBI", "JP-NPA", "BR-PF"], restricted=["PL"],
        case_id="FR-2026-0117", tlp="AMBER", handling=["H0"], categories=["PERSONAL"],
        purpose="arrest with a view to extradition", legal_basis="INTERPOL RPD Art. 82"),
        kind="NOTICE", colour="RED", action="ARREST", reference="A-1187/11-2026",
        subj=subject("adult male, armed and dangerous", person={"family_name": "DOE", "given_names": "John"}),
        offence="armed robbery of a cash-in-transit van")
    red_query = query(envelope(
        "DE-BKA", to=["NL-KLPD"], case_id="DE-BKA-4471", tlp="RED", handling=["H0", "H2"],
        categories=["VEHICLE"], legal_basis="Directive (EU) 2023/977 Art. 4"),
        "Is the lorry with plate 53-BKL-7 known to you?", criteria={"plate": "53-BKL-7"})
    urgent = query(envelope(
        "IT-PS", to=["ES-CNP"], case_id="IT-PS-0932", tlp="AMBER", priority="URGENT",
        categories=["PERSONAL", "LOCATION"], legal_basis="Directive (EU) 2023/977 Art. 4"),
        "Last known address of the suspect in the kidnapping of a minor?", accessibility="DIRECT",
        urgency_ground="THREAT_TO_LIFE_OR_SAFETY")
    biometric = query(envelope(
        "FR-PN", to=["DE-BKA", "US-FBI", "BR-PF"], case_id="FR-2026-0117", tlp="AMBER",
        categories=["FINGERPRINT"], purpose="identify a suspect from latent prints"),
        "Do these latent fingerprints match a record of yours?", kind="HIT_CHECK",
        subj=subject("latent prints from the crime scene", kind="UNIDENTIFIED_PERSON",
                     biometrics={"fingerprint_ref": "FR-AFIS-2026-55120", "fingerprints": b"\x01ANSI-NIST"}))
    diffusion = alert(envelope(
        "ES-CNP", to=["FR-PN", "PL-KGP"], case_id="ES-CNP-2210", tlp="AMBER",
        categories=["PERSONAL"]), kind="DIFFUSION", colour="RED", action="ARREST",
        reference="ES-2210-D", subj=subject("wanted for fraud", person={"family_name": "ROE"}),
        offence="fraud (EUR 40,000)")
    neutral = alert(envelope(
        "CO-PONAL", groups=["AMERIPOL"], case_id="CO-7781", tlp="GREEN"), kind="DIFFUSION",
        colour="BLUE", action="LOCATE", sensitivity=["POLITICAL"],
        subj=subject("opposition journalist"), offence="insulting the head of state")
    jit = query(envelope("ES-CNP", groups=["JIT-ORION"], case_id="JIT-ORION-3", tlp="RED"),
                "Share the wiretap summaries of last week.")
    return [
        Step("Red Notice from France, held for the hub's review (Poland restricted by France)",
             "Alert", red_notice),
        Step("TLP:RED bilateral query, Germany to the Netherlands (H2: not to be passed on)",
             "Query", red_query),
        Step("Urgent query (threat to life), Italy to Spain, with its legal deadline", "Query", urgent),
        Step("Fingerprint HIT_CHECK from France to Germany, the United States and Brazil",
             "Query", biometric),
        Step("Diffusion for arrest from Spain to France and Poland", "Alert", diffusion),
        Step("Politically tagged diffusion from Colombia (INTERPOL Article 3)", "Alert", neutral),
        Step("TLP:RED sent to a case group instead of named agencies", "Query", jit),
    ]


def _follow_ups(first: list[Step]) -> list[Step]:
    notice, red_query, urgent, biometric, diffusion = (s.record for s in first[:5])
    reviewed = alert(envelope(
        "INT-IPSG", groups=["EU"], to=["US-FBI", "JP-NPA", "BR-PF"], restricted=["PL"],
        case_id="FR-2026-0117", tlp="AMBER", handling=["H0"], categories=["PERSONAL"],
        derived_from=notice["envelope"]["message_id"], purpose="arrest with a view to extradition"),
        kind="NOTICE", colour="RED", action="ARREST", reference="A-1187/11-2026",
        subj=notice["subject"], offence=notice["offence"])
    return [
        Step("The hub publishes the reviewed Red Notice (Poland still restricted)", "Alert", reviewed),
        Step("The Netherlands answer the TLP:RED query", "Reply", reply(envelope(
            "NL-KLPD", correlation_id=red_query["envelope"]["message_id"], case_id="DE-BKA-4471",
            tlp="RED"), "HIT", information="Registered to a Rotterdam haulier; seen at Venlo 3 days ago.")),
        Step("Spain answers the urgent query within its deadline", "Reply", reply(envelope(
            "ES-CNP", correlation_id=urgent["envelope"]["message_id"], case_id="IT-PS-0932"),
            "HIT", information="Calle Mayor 12, Valencia (verified today).")),
        Step("Germany answers the HIT_CHECK: HIT, reference only (Prüm step one)", "Reply", reply(envelope(
            "DE-BKA", correlation_id=biometric["envelope"]["message_id"], case_id="FR-2026-0117"),
            "HIT", reference="DE-AFIS-88-2031")),
        Step("Poland FLAGs the diffusion: it will not arrest on its territory", "Reply", reply(envelope(
            "PL-KGP", correlation_id=diffusion["envelope"]["message_id"], case_id="ES-CNP-2210"),
            "FLAG", information="Offence below the threshold for arrest under Polish law.")),
        Step("A record in Malaysia's outbox that claims to come from France (spoofed)", "Alert",
             alert(envelope("FR-PN", to=["SG-SPF"]), kind="DIFFUSION"), outbox_of="MY-PDRM"),
    ]


ICONS = {"DELIVERED": "delivered", "REDACTED": "delivered, redacted", "DENIED": "REFUSED", "HELD": "held",
         "RECORDED": "on record", "WAIVED": "copy waived"}


def _describe(step: Step, decisions: list[dict[str, Any]], out: Out) -> None:
    env = step.record["envelope"]
    out.console.print(f"\n[bold]{step.title}[/bold]")
    extra = ""
    if step.message_type == "Query" and step.record.get("deadline"):
        hours = (step.record["deadline"] - env["created_at"]) / 3_600_000
        extra = f", answer due within {hours:.0f} h"
    by = f" (liaison officer {env['officer']})" if env.get("officer") else ""
    out.console.print(f"  {step.message_type} {env['message_id'][:8]} from {env['originator']}{by}"
                      f", TLP:{env['tlp'].replace('_', '+')}{extra}")
    for d in sorted(decisions, key=lambda d: (d["decision"], d["recipient"] or "")):
        why = f" - {d['reason_code']}: {d['reason']}" if d["reason_code"] else ""
        if d["redactions"] and not d["reason"]:
            why += f" (removed: {', '.join(d['redactions'])})"
        colour = {"DENIED": "red", "HELD": "yellow", "REDACTED": "magenta", "RECORDED": "cyan",
                  "WAIVED": "yellow"}.get(d["decision"], "green")
        out.console.print(f"    [{colour}]{ICONS.get(d['decision'], d['decision']):<20}[/{colour}]"
                          f" {d['recipient'] or 'the bus'}{why}")


class Agencies:
    """One producer per agency, each connected as that agency (its own credential when secured)."""

    def __init__(self, settings_of: Callable[[str], KafkaSettings]) -> None:
        self.settings_of = settings_of
        self._producers: dict[str, AIOKafkaProducer] = {}

    async def producer(self, code: str) -> AIOKafkaProducer:
        if code not in self._producers:
            producer = AIOKafkaProducer(**self.settings_of(code).kafka_kwargs(), enable_idempotence=True,
                                        acks="all")
            await producer.start()
            self._producers[code] = producer
        return self._producers[code]

    async def close(self) -> None:
        for producer in self._producers.values():
            await producer.stop()


async def _trespass(settings: KafkaSettings, out: Out) -> None:
    """The broker itself refuses an agency what its ACLs do not allow (shown on a secured bus)."""
    out.console.print("\n[bold]The broker enforces who may read and write (agencies log in with SCRAM "
                      "over TLS)[/bold]")
    names = settings.topics
    consumer = AIOKafkaConsumer(names.inbox("Alert", "FR-PN"), **settings.kafka_kwargs(),
                                group_id=f"{agency_group_prefix(names, 'US-FBI')}peek",
                                request_timeout_ms=10_000)
    producer = AIOKafkaProducer(**settings.kafka_kwargs(), request_timeout_ms=10_000)
    await producer.start()
    attempts: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        (f"US-FBI reads France's inbox {names.inbox('Alert', 'FR-PN')}", consumer.start),
        (f"US-FBI writes into Germany's outbox {names.outbox('Alert', 'DE-BKA')}",
         lambda: producer.send_and_wait(names.outbox("Alert", "DE-BKA"), b"not allowed")),
        (f"US-FBI writes into the audit trail {names.audit}",
         lambda: producer.send_and_wait(names.audit, b"not allowed")),
    ]
    try:
        with kafka_client_logs_silenced():  # it logs each refusal we provoke on purpose
            for what, attempt in attempts:
                try:
                    await attempt()
                    out.console.print(f"    [red]ALLOWED (misconfigured ACLs!)[/red] {what}")
                except KafkaError as exc:
                    refused = f"{'refused by broker':<20}"
                    out.console.print(f"    [green]{refused}[/green] {what}: {type(exc).__name__}")
    finally:
        await consumer.stop()
        await producer.stop()

DAY_MS = 86_400_000


async def _casework(send: Callable[[Step], Awaitable[None]], observer: Observer, out: Out, *,
                    settings: KafkaSettings, access: AccessControl | None,
                    settings_of: Callable[[str], KafkaSettings] | None) -> None:
    """Chapter two: the four rules of case-based cooperation, as the members themselves drive them."""
    run = format(int(time.time()) % 0xFFFFF, "X")  # names of this run: a rerun forms a new team

    async def show(step: Step, count: int = 1) -> None:
        await send(step)
        _describe(step, await observer.decided(step.message_id, count=count), out)

    out.console.print("\n[bold underline]Case-based cooperation[/bold underline]")
    # posted first: the router has the directory entry by the time the officer's case comes up
    out.console.print("\n[bold]France posts a liaison officer in Bogota for case OP-CONDOR and Colombia"
                      "[/bold] (`liaison officer post FR-PN BOGOTA`)")
    if any(v.officer.code == "FR-PN-BOGOTA" and v.in_force for v in await officers.list_officers(settings)):
        await officers.revoke_officer(settings, "FR-PN-BOGOTA", access=access)  # a run cut short left it
    officer = await officers.post_officer(settings, "FR-PN", "BOGOTA", post="Bogota, Colombia",
                                          cases=["OP-CONDOR"], countries=["CO"],
                                          ends_at=int(time.time() * 1000) + 180 * DAY_MS, access=access)
    for line in officer.access:
        out.console.print(f"    {line.split(';')[0]}")
    team, ends = f"JIT-ATLAS-{run}", int(time.time() * 1000) + 180 * DAY_MS
    propose = Step(f"France proposes the joint investigation team {team} to Spain and the Netherlands",
                   "Query", query(envelope("FR-PN", to=["ES-CNP", "NL-KLPD"], case_id=f"ATLAS-{run}",
                                           purpose="Joint investigation team on a cocaine route",
                                           legal_basis="EU MLA Convention 2000 Art. 13; FD 2002/465/JHA"),
                                  f"Join {team} for six months?",
                                  case_group=case_group_change(team, "PROPOSE", ends_at=ends)))
    await show(propose, 3)
    for code, title in (("ES-CNP", "Spain accepts"), ("NL-KLPD", "The Netherlands accept")):
        await show(Step(title, "Reply", invitation_answer(
            envelope(code, correlation_id=propose.message_id, case_id=f"ATLAS-{run}"), accept=True)), 2)
    await show(Step(f"Spain writes to {team}: only its members receive it", "Alert", alert(
        envelope("ES-CNP", groups=[team], case_id=f"ATLAS-{run}"), kind="DIFFUSION", reference=f"ATLAS-{run}",
        offence="container of cocaine expected in Rotterdam")), 2)
    await show(Step(f"Italy, not a member, writes to {team}", "Alert", alert(
        envelope("IT-PS", groups=[team], case_id=f"ATLAS-{run}"), kind="DIFFUSION")))
    await show(Step(f"France closes {team}: its members are told, and it reaches nobody now", "Query", query(
        envelope("FR-PN", groups=[team], case_id=f"ATLAS-{run}"), "The team's work is done.",
        case_group=case_group_change(team, "CLOSE"))))

    out.console.print("\n[bold]France's liaison officer in Bogota works case OP-CONDOR[/bold]")
    tip = Step("Colombia asks France about a courier in OP-CONDOR: the officer gets a marked copy", "Query",
               query(envelope("CO-PONAL", to=["FR-PN"], case_id="OP-CONDOR"),
                     "Is the courier on flight AF 423 known to you?"))
    await show(tip, 2)
    await show(Step("The officer answers for France (the envelope names both)", "Reply", reply(
        envelope("FR-PN", correlation_id=tip.message_id, case_id="OP-CONDOR", officer="FR-PN-BOGOTA"),
        "HIT", information="Known to the Police nationale: a courier of the network since 2024."),
        outbox_of="FR-PN-BOGOTA"))
    revoked = await officers.revoke_officer(settings, "FR-PN-BOGOTA", access=access)
    out.console.print("  France revokes the delegation (`liaison officer revoke`): "
                      + ("; ".join(revoked.access) or "the router stops at once"))
    if settings_of is not None and settings.security_protocol != "PLAINTEXT":
        await _shut_out(settings_of("FR-PN-BOGOTA"), out)

    await show(Step("The Gendarmerie (a designated authority) asks Germany's SPOC: France's SPOC gets a "
                    "copy (Directive 2023/977 Art. 4(1))", "Query", query(
                        envelope("FR-GN", to=["DE-BKA"], case_id=f"GN-{run}"),
                        "Is the van with plate B-KX-4410 known to you?")), 2)
    await show(Step("The same, skipping the copy on an Art. 4(2) ground, which the audit keeps", "Query",
                    query(envelope("FR-GN", to=["DE-BKA"], case_id=f"GN-{run}",
                                   spoc_copy_waiver="HIGHLY_SENSITIVE_INVESTIGATION"),
                          "Is the owner of that van known to you?")), 2)

    check = Step("France runs a fingerprint search in Germany (Prüm)", "Query", query(
        envelope("FR-PN", to=["DE-BKA"], case_id=f"PRUM-{run}", categories=["FINGERPRINT"]),
        "Do these prints match a record of yours?", kind="HIT_CHECK",
        criteria={"fingerprint_ref": f"FR-AFIS-{run}"}))
    await show(check)
    reference = f"DE-AFIS-{run}"
    await show(Step("Germany: HIT, reference only; the match awaits a person's confirmation", "Reply", reply(
        envelope("DE-BKA", correlation_id=check.message_id, case_id=f"PRUM-{run}"), "HIT",
        reference=reference)), 2)
    request = Step("France asks for the person's data: held until the match is confirmed", "Query", query(
        envelope("FR-PN", to=["DE-BKA"], case_id=f"PRUM-{run}"), "Your data on the person of the hit.",
        kind="DATA_REQUEST", reference=reference))
    await show(request)
    await show(Step("A fingerprint expert in Germany confirms the match: the request goes through", "Reply",
                    reply(envelope("DE-BKA", correlation_id=check.message_id, case_id=f"PRUM-{run}"), "HIT",
                          reference=reference,
                          confirmation=match_confirmation("KHK Weber, AFIS unit"))), 2)
    released = await observer.decided(request.message_id, count=2)
    out.console.print(f"  ...and the held request: {released[-1]['decision'].lower()} to "
                      f"{released[-1]['recipient']}")


async def _shut_out(officer: KafkaSettings, out: Out) -> None:
    """The revoked officer's credential no longer opens the broker."""
    names = officer.topics
    consumer = AIOKafkaConsumer(names.inbox("Query", "FR-PN-BOGOTA"), **officer.kafka_kwargs(),
                                group_id=None, request_timeout_ms=10_000)
    try:
        with kafka_client_logs_silenced():
            await consumer.start()
        out.console.print("    [red]ALLOWED (the revoked officer still logs in!)[/red]")
    except KafkaError as exc:
        out.console.print(f"    [green]{'refused by broker':<20}[/green] FR-PN-BOGOTA reads its inbox: "
                          f"{type(exc).__name__}")
    finally:
        await consumer.stop()


async def play(settings: KafkaSettings, out: Out,
               settings_of: Callable[[str], KafkaSettings] | None = None, *,
               access: AccessControl | None = None) -> None:
    """The scenario; `settings` are the operator's (reading the audit), `settings_of` each agency's,
    `access` gives a posted liaison officer its credential and ACLs on a secured bus."""
    async with RegistryClient.from_settings(settings) as client:
        codec = await ready_codec(client)
    observer = Observer(settings, codec)
    follower = asyncio.create_task(observer.follow(int(time.time() * 1000)))
    agencies = Agencies(settings_of or (lambda _code: settings))
    names = settings.topics

    async def send(step: Step) -> None:
        env = step.record["envelope"]
        sender = step.outbox_of or env["originator"]
        producer = await agencies.producer(sender)
        await producer.send_and_wait(names.outbox(step.message_type, sender),
                                     codec.encode(step.message_type, step.record),
                                     key=str(env["case_id"] or env["message_id"]).encode())

    try:
        await asyncio.sleep(0.5)  # the observer positions itself at the end of the audit first
        first = _scenario_first()
        for step in first:
            await send(step)
        await (await agencies.producer("JP-NPA")).send_and_wait(names.outbox("Query", "JP-NPA"),
                                                                  b"GET / HTTP/1.1 (not a record)")
        for step in first:
            _describe(step, await observer.decided(step.message_id), out)
        follow = _follow_ups(first)
        for step in follow[:-1]:
            await send(step)
            _describe(step, await observer.decided(step.message_id), out)
        await send(follow[-1])
        await observer.dead_lettered(2)
        out.console.print("\n[bold]Bad input, dead-lettered while the traffic above flowed[/bold]")
        for letter in observer.dead_letters:
            out.console.print(f"    [red]{letter['error_code']:<20}[/red] from {letter['source_topic']}"
                              f" offset {letter['source_offset']}: {letter['error']}")
        if settings_of is not None and settings.security_protocol != "PLAINTEXT":
            await _trespass(settings_of("US-FBI"), out)
        await _casework(send, observer, out, settings=settings, access=access, settings_of=settings_of)
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
        await agencies.close()


def run_demo(out: Out) -> None:
    from liaison.local.stack import LocalStack  # noqa: PLC0415  # the stack pulls in service code

    started = time.monotonic()
    out.progress("starting the local broker, registry and router")
    stack = LocalStack()
    stack.up()
    mode = ("secured: SASL/SCRAM over TLS, ACLs deny by default" if stack.secure
            else f"NOT secured ({'LIAISON_LOCAL_SECURE'}=false)")
    out.console.print("[bold]Liaison demo[/bold]: 15 agencies of 12 countries, an INTERPOL-style hub "
                      f"(INT-IPSG) and Europol (EU-EUROPOL), on a local Kafka broker ({mode}); "
                      "each agency sends with its own credential.")
    access = access_control(stack.admin_settings(), stack.files) if stack.secure else None
    asyncio.run(play(stack.admin_settings(), out, stack.agency_settings, access=access))
    out.console.print(f"\nDone in {time.monotonic() - started:.0f} s. The bus is still running; after "
                      "`source .venv/bin/activate`, try:\n"
                      "  liaison status                      what runs, and where its logs are\n"
                      "  liaison inbox NL-KLPD               what the Netherlands received\n"
                      "  LIAISON_CREDENTIALS=.run/secrets/NL-KLPD.env liaison inbox NL-KLPD\n"
                      "                                      the same, logged in as the Netherlands\n"
                      "  liaison receipts FR-PN              what France was told about its messages\n"
                      "  liaison case FR-2026-0117           the whole Red Notice case, from the audit\n"
                      "  liaison case-group list             the joint teams formed on the bus\n"
                      "  liaison officer list                the liaison officers and their delegations\n"
                      "  liaison deadletter list             the refused input and why\n"
                      "  make down                           stop everything")
