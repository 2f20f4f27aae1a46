"""One consumed record in, every record it causes out: deliveries, receipts, audit, dead letters.

Pure of Kafka I/O, so the whole routing step is unit-testable; the app sends what this returns
inside one transaction. Deliveries are the original bytes unless a rule redacted something.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiokafka import ConsumerRecord

from liaison.codec import Codec
from liaison.deadlines_table import DeadlineTable, default_table
from liaison.errors import DecodeError
from liaison.policy import Decision, PolicyEngine, RoutingResult, apply_redactions
from liaison.topics import Topics
from services.router.state import (
    RouterState,
    answered_query,
    consent_key,
    open_query,
    routed_value,
)

log = structlog.get_logger(__name__)

SERVICE = "router"
BUS_ORIGINATOR = "BUS.ROUTER"

_AUDIT_DECISION = {"DENY": "DENIED", "HOLD": "HELD"}
_RECEIPT_KIND = {"DELIVER": "DELIVERED", "DENY": "DENIED", "HOLD": "HELD_FOR_REVIEW"}


@dataclass(slots=True)
class Output:
    topic: str
    key: bytes | None
    value: bytes


@dataclass
class BatchOutcome:
    """Everything one batch of one partition produces, sent and committed together."""

    outputs: list[Output] = field(default_factory=list)
    routed: dict[str, dict[str, Any]] = field(default_factory=dict)
    queries: dict[str, dict[str, Any]] = field(default_factory=dict)
    consents: dict[str, dict[str, Any]] = field(default_factory=dict)
    decisions: list[tuple[str, str, str | None]] = field(default_factory=list)  # type, outcome, reason
    dead_letters: list[str] = field(default_factory=list)  # error codes
    created_ms: list[int] = field(default_factory=list)  # record timestamps, for latency


@dataclass(frozen=True, slots=True)
class Source:
    topic: str
    partition: int
    offset: int
    timestamp: int | None
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()

    @classmethod
    def of(cls, rec: ConsumerRecord[bytes, bytes]) -> Source:
        return cls(rec.topic, rec.partition, rec.offset, rec.timestamp, rec.key, rec.value,
                   tuple(rec.headers or ()))


def _key(envelope: dict[str, Any]) -> bytes:
    """Partition key: the case id when present, else the message id."""
    return str(envelope["case_id"] or envelope["message_id"]).encode()


class Pipeline:
    """Decode, evaluate, and build the output records of one input record."""

    def __init__(self, codec: Codec, engine: Callable[[], PolicyEngine], state: RouterState,
                 topics: Topics, *, clock: Callable[[], float] = time.time,
                 deadlines: DeadlineTable | None = None) -> None:
        self.topics = topics
        self.deadlines = deadlines or default_table()
        self.codec = codec
        self.engine = engine
        self.state = state
        self.clock = clock

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    # -- stage 1: read ----------------------------------------------------------------------------
    def decode(self, src: Source) -> tuple[str, dict[str, Any]]:
        """(message type, record); raises DecodeError for bytes that are not a readable message."""
        name, record = self.codec.decode(src.value)
        owner = self.topics.parse_outbox(src.topic)
        if owner is None or owner[0] != name:
            expected = owner[0] if owner else "nothing"
            raise WrongType(f"a {name} record on {src.topic}, which carries {expected}")
        return name, record

    def unknown_references(self, record: dict[str, Any]) -> bool:
        """True when the record cites a message this instance has not seen (yet)."""
        env = record["envelope"]
        routed = self.state.routed.items
        return any(ref is not None and ref not in routed
                   for ref in (env["correlation_id"], env["derived_from"]))

    # -- stage 2: decide and emit -----------------------------------------------------------------
    def dead_letter(self, src: Source, code: str, error: str, out: BatchOutcome, *,
                    claimed: str | None = None, about: dict[str, Any] | None = None) -> None:
        """Refuse a record whole; `about` is its envelope when it could be read, so that the
        sender's REJECTED receipt names the message."""
        owner = self.topics.parse_outbox(src.topic)
        owner_code = owner[1] if owner else None
        letter = {
            "dead_letter_id": str(uuid.uuid4()), "failed_at": self.now_ms(), "service": SERVICE,
            "source_topic": src.topic, "source_partition": src.partition, "source_offset": src.offset,
            "source_timestamp": src.timestamp, "key": src.key, "value": src.value,
            "headers": dict(src.headers), "error_code": code, "error": error,
            "claimed_originator": claimed, "outbox_owner": owner_code,
        }
        out.outputs.append(Output(self.topics.deadletter, src.key, self.codec.encode("DeadLetter", letter)))
        out.dead_letters.append(code)
        log.warning("dead-lettered", error_code=code, error=error, topic=src.topic,
                    partition=src.partition, offset=src.offset, claimed_originator=claimed)
        if owner is not None:  # tell the sender its record was refused, without echoing it
            receipt = self._receipt(owner[1], "REJECTED", about=None, message_type=owner[0],
                                    recipient=None, reason_code=code, reason=error,
                                    about_id=about["message_id"] if about else None,
                                    case_id=about["case_id"] if about else None)
            out.outputs.append(Output(self.topics.receipts(owner[1]), None, receipt))

    def route(self, src: Source, message_type: str, record: dict[str, Any], out: BatchOutcome) -> None:
        env = record["envelope"]
        owner = self.topics.parse_outbox(src.topic)
        assert owner is not None  # decode() checked it
        now = self.now_ms()
        result: RoutingResult = self.engine().route(
            message_type, record, outbox_owner=owner[1], now_ms=now, state=self.state)
        if result.rejection is not None:
            self.dead_letter(src, result.rejection.code, result.rejection.reason, out,
                             claimed=env.get("originator"), about=env)
            return
        key = _key(env)
        original = src.value
        if message_type == "Query":
            deadline = self.deadlines.stamp(env["priority"], record["accessibility"], now,
                                            record["deadline"])
            if deadline != record["deadline"]:  # the recipient sees the deadline the bus stamped
                record = {**record, "deadline": deadline}
                original = self.codec.encode("Query", record)
        delivered: list[str] = []
        for decision in result.decisions:
            if decision.outcome == "DELIVER":
                delivered.append(decision.recipient)
                value = original if not decision.redactions else self.codec.encode(
                    message_type, apply_redactions(record, decision.redactions))
                assert value is not None
                out.outputs.append(Output(self.topics.inbox(message_type, decision.recipient), key, value))
            self._account(src, message_type, record, decision, now=now, out=out)
        for hub in result.notify_hub:
            kind = _hub_receipt_kind(message_type, record)
            out.outputs.append(Output(self.topics.receipts(hub), key, self._receipt(
                hub, kind, about=env, message_type=message_type, recipient=env["originator"],
                about_id=env["message_id"], case_id=env["case_id"])))
        out.routed[env["message_id"]] = routed_value(
            message_type, env["originator"], list(env["handling_codes"]), delivered,
            kind=record.get("kind") if message_type == "Query" else None,
            derived_from=env["derived_from"])
        log.debug("routed", message_id=env["message_id"], case_id=env["case_id"],
                  originator=env["originator"], trace_id=env["trace_id"], message_type=message_type,
                  delivered=len(delivered), decisions=len(result.decisions))
        if message_type == "Query" and delivered:
            out.queries[env["message_id"]] = open_query(record, delivered, record["deadline"])
        if message_type == "Reply" and delivered:
            self._reply_delivered(src, record, out, now=now)
        out.created_ms.append(src.timestamp or env["created_at"])

    def _reply_delivered(self, src: Source, reply: dict[str, Any], out: BatchOutcome, *, now: int) -> None:
        """A delivered reply may close a query, record a consent, or tell a data owner of a hit."""
        env = reply["envelope"]
        query_id = env["correlation_id"]
        current = out.queries.get(query_id) or self.state.queries.items.get(query_id)
        if current is not None:
            out.queries[query_id] = answered_query(current, env["originator"], reply["outcome"], now)
        if reply["outcome"] == "GRANTED":
            self._record_consent(reply, out)
        owner = reply["data_owner"]
        asker = self.state.originator_of(query_id)
        if (reply["outcome"] == "HIT" and owner and owner not in (env["originator"], asker)
                and owner in self.engine().directory.agencies):
            self._notify_hit(src, reply, owner, asker, out, now=now)

    def _notify_hit(self, src: Source, reply: dict[str, Any], owner: str, asker: str | None,
                    out: BatchOutcome, *, now: int) -> None:
        """Prüm / I-24/7: the owner of a record that hit is told who searched it (not the data)."""
        env = reply["envelope"]
        out.outputs.append(Output(self.topics.receipts(owner), _key(env), self._receipt(
            owner, "HIT_NOTIFICATION", about=env, message_type="Reply", recipient=asker,
            reason=f"{env['originator']} reported a hit on your record to {asker}",
            about_id=env["message_id"], case_id=env["case_id"], reference=reply["reference"])))
        notice = Decision(recipient=owner, outcome="DELIVER", reason_code=None,
                          reason="hit notification to the data owner", rule="hit_notification")
        out.outputs.append(Output(self.topics.audit, _key(env), self.codec.encode(
            "AuditRecord", self._audit(src, "Reply", reply, notice, now=now, decision="NOTIFIED"))))

    def _account(self, src: Source, message_type: str, record: dict[str, Any], decision: Decision,
                 *, now: int, out: BatchOutcome) -> None:
        """The receipt to the originator and the audit record of one decision."""
        env = record["envelope"]
        redacted = decision.outcome == "DELIVER" and bool(decision.redactions)
        reason = decision.reason
        if redacted and reason is None:
            reason = "delivered with " + ", ".join(decision.redactions) + " removed"
        out.outputs.append(Output(self.topics.receipts(env["originator"]), _key(env), self._receipt(
            env["originator"], _RECEIPT_KIND[decision.outcome], about=env, message_type=message_type,
            recipient=decision.recipient, reason_code=decision.reason_code, reason=reason,
            about_id=env["message_id"], case_id=env["case_id"],
            deadline=record.get("deadline") if message_type == "Query" else None)))
        audit = self._audit(src, message_type, record, decision, now=now,
                            decision="REDACTED" if redacted else _AUDIT_DECISION.get(decision.outcome,
                                                                                     "DELIVERED"),
                            reason=reason)
        out.outputs.append(Output(self.topics.audit, _key(env), self.codec.encode("AuditRecord", audit)))
        out.decisions.append((message_type, decision.outcome, decision.reason_code))

    def _audit(self, src: Source, message_type: str, record: dict[str, Any], verdict: Decision, *,
               now: int, decision: str, reason: str | None = None) -> dict[str, Any]:
        env = record["envelope"]
        return {
            "audit_id": str(uuid.uuid4()), "decided_at": now, "service": SERVICE,
            "message_id": env["message_id"], "message_type": message_type,
            "originator": env["originator"], "case_id": env["case_id"],
            "correlation_id": env["correlation_id"], "derived_from": env["derived_from"],
            "recipient": verdict.recipient, "decision": decision,
            "reason_code": verdict.reason_code, "reason": reason or verdict.reason,
            "redactions": list(verdict.redactions), "tlp": env["tlp"],
            "handling_codes": env["handling_codes"], "data_categories": env["data_categories"],
            "deadline": record.get("deadline") if message_type == "Query" else None,
            "source_topic": src.topic, "source_partition": src.partition, "source_offset": src.offset,
            "trace_id": env["trace_id"],
        }

    def _record_consent(self, reply: dict[str, Any], out: BatchOutcome) -> None:
        """A GRANTED reply to a CONSENT query puts the provider's consent on record."""
        query_id = reply["envelope"]["correlation_id"]
        if self.state.query_kind_of(query_id) != "CONSENT":
            return
        shared = self.state.derived_from_of(query_id)
        requester = self.state.originator_of(query_id)
        if shared is None or requester is None:
            return
        if self.state.originator_of(shared) != reply["envelope"]["originator"]:
            return  # only the provider of the H2 information can consent to passing it on
        out.consents[consent_key(shared, requester)] = {
            "provider": reply["envelope"]["originator"], "granted_at": self.now_ms(),
            "reply_id": reply["envelope"]["message_id"], "query_id": query_id,
        }

    def _receipt(self, to: str, kind: str, *, about: dict[str, Any] | None, message_type: str,
                 recipient: str | None, reason_code: str | None = None, reason: str | None = None,
                 about_id: str | None, case_id: str | None, deadline: int | None = None,
                 reference: str | None = None) -> bytes:
        now = self.now_ms()
        receipt = {
            "envelope": {
                "message_id": str(uuid.uuid4()), "correlation_id": about_id, "case_id": case_id,
                "originator": BUS_ORIGINATOR, "addressing": {"agencies": [to]}, "created_at": now,
                "tlp": "AMBER_STRICT", "trace_id": about["trace_id"] if about else None,
            },
            "kind": kind, "message_type": message_type, "recipient": recipient,
            "reason_code": reason_code, "reason": reason, "deadline": deadline, "reference": reference,
        }
        return self.codec.encode("Receipt", receipt)


def _hub_receipt_kind(message_type: str, record: dict[str, Any]) -> str:
    if message_type == "Reply":
        return "FLAGGED" if record["outcome"] == "FLAG" else "HIT_NOTIFICATION"
    return "HELD_FOR_REVIEW"


class WrongType(DecodeError):
    """A readable record of another type than its outbox carries (e.g. a Query on alerts.out)."""

    code = "WRONG_TOPIC_TYPE"

