"""What the router logs while routing: the ids an operator needs, never what a message says."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import pytest
import structlog

from liaison.sdk import alert, envelope
from liaison.sdk.builders import subject
from tests.bus_harness import running_bus

# Values that only the message body carries; none of them may reach a log.
FAMILY_NAME = "Vandermolenzwaag"
GIVEN_NAMES = "Quirinius Obadiah"
ALIAS = "Kwirrie-the-Fox"
DNA_PROFILE = "D8S1179-13-14-D21S11-29-30-TH01-6-9.3"
FINGERPRINT_REF = "AFIS-FR-77X-0042"
FINGERPRINTS = b"MINUTIAE:ridge-ending@17,42;bifurcation@88,13"
DESCRIPTION = "scar above the left eyebrow, speaks Flemish"
SECRETS = (FAMILY_NAME, GIVEN_NAMES, ALIAS, DNA_PROFILE, FINGERPRINT_REF, DESCRIPTION,
           FINGERPRINTS.decode(), "MINUTIAE", "Vandermolen")


def _strings(value: Any) -> Iterable[str]:
    """Every string (and bytes, decoded) inside a captured log event, keys included."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, bytes):
        yield value.decode("latin-1")
    else:
        yield str(value)


def _sensitive_alert() -> dict[str, Any]:
    person = {"family_name": FAMILY_NAME, "given_names": GIVEN_NAMES, "date_of_birth": None,
              "nationalities": ["BE"], "sex": "M", "aliases": [ALIAS]}
    return alert(
        envelope("FR-PN", to=["DE-BKA", "BR-PF"], case_id="CASE-LOGS-1",
                 trace_id="trace-logs-0001", categories=["PERSONAL", "DNA", "FINGERPRINT"]),
        kind="DIFFUSION", description=DESCRIPTION,
        subj=subject("adult male", person=person,
                     biometrics={"fingerprint_ref": FINGERPRINT_REF, "fingerprints": FINGERPRINTS,
                                 "dna_profile": DNA_PROFILE, "facial_image": None}))


async def test_router_logs_ids_and_decisions_but_never_the_body(
        kafka_bootstrap: str, caplog: pytest.LogCaptureFixture) -> None:
    """A routed message is logged with message id, case id, originator and trace id, and no body data;
    records dead-lettered (even ones carrying a person's data) are logged by code, not by content."""
    # Libraries log through the stdlib at WARNING and above in a service (configure_logging). Not
    # lower: aiokafka's producer logs every record's key and value at DEBUG ("Sending (key=... value=...)").
    caplog.set_level(logging.WARNING)
    msg = _sensitive_alert()
    env = msg["envelope"]
    with structlog.testing.capture_logs() as events:
        async with running_bus(kafka_bootstrap) as bus:
            await bus.send("Alert", msg)
            outbox = bus.topics.outbox("Alert", "FR-PN")
            encoded = bus.codec.encode("Alert", msg)
            await bus.send_raw(outbox, b"\x01" + encoded[1:])  # a person's data behind a bad magic byte
            await bus.send_raw(outbox, encoded[:-7])  # the same alert, cut short
            await bus.send_raw(outbox, encoded + FAMILY_NAME.encode())  # with the name appended
            letters = await bus.read(bus.topics.deadletter, 3)
            receipts = await bus.read(bus.topics.receipts("FR-PN"), 5)
    assert len(letters) == 3
    assert {r["recipient"] for _, r in receipts if r["kind"] in {"DELIVERED", "DENIED"}} == {
        "DE-BKA", "BR-PF"}

    routed = [e for e in events if e["event"] == "routed"]
    assert len(routed) == 1
    assert routed[0]["log_level"] == "debug"
    assert {k: routed[0][k] for k in ("message_id", "case_id", "originator", "trace_id", "message_type")} == {
        "message_id": env["message_id"], "case_id": "CASE-LOGS-1", "originator": "FR-PN",
        "trace_id": "trace-logs-0001", "message_type": "Alert"}
    assert routed[0]["decisions"] == 2

    dead = [e for e in events if e["event"] == "dead-lettered"]
    assert sorted(e["error_code"] for e in dead) == sorted(r["error_code"] for _, r in letters)
    assert all(e["log_level"] == "warning" and e["topic"] == outbox for e in dead)
    assert any(e["event"] == "partitions assigned" for e in events)

    logged = [s for e in events for s in _strings(e)]
    logged += [r.getMessage() for r in caplog.records]
    for secret in SECRETS:
        leaks = [line for line in logged if secret in line]
        assert not leaks, f"{secret!r} was logged: {leaks[:3]}"
