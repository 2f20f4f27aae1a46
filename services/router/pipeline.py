"""One consumed record in, every record it causes out: deliveries, receipts, audit, dead letters.

Pure of Kafka I/O, so the whole routing step is unit-testable; the app sends what this returns
inside one transaction. Deliveries are the original bytes unless a rule redacted something.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from liaison.case_groups import INVITING, CaseGroup, answered, changed, ended, proposed
from liaison.codec import Codec, random_uuid
from liaison.deadlines_table import DeadlineTable, default_table
from liaison.directory import BIOMETRIC_CATEGORIES, Directory, Officer, country_of
from liaison.errors import DecodeError
from liaison.policy import Decision, PolicyEngine, RoutingResult, apply_redactions
from liaison.policy import reasons as R  # short alias: the case-based rules cite many codes
from liaison.policy.model import match_key
from liaison.policy.redaction import locate
from liaison.topics import Topics
from services.router import limits as L  # short alias: the codes read as L.TOO_LARGE
from services.router.limits import Limits
from services.router.state import (
    RoutedView,
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
_LOG_TEXT = 120  # characters of a hostile string that reach a log line
_RECEIPT_KIND = {"DELIVER": "DELIVERED", "DENY": "DENIED", "HOLD": "HELD_FOR_REVIEW"}
MAX_HELD_BYTES = 256 * 1024
"""DATA_REQUESTs kept while a biometric match awaits confirmation, per match (their bytes): beyond,
a request is held and not kept; its sender, holding a HELD_FOR_REVIEW receipt, sends it again once
the match is confirmed (a warning is logged)."""
_GROUP_CODES = {"PROPOSE": R.CASE_GROUP_PROPOSED, "ADD": R.CASE_GROUP_INVITED, "REMOVE": R.CASE_GROUP_REMOVED,
                "EXTEND": R.CASE_GROUP_EXTENDED, "CLOSE": R.CASE_GROUP_CLOSED}


@dataclass(slots=True)
class Output:
    topic: str
    key: bytes | None
    value: bytes


@dataclass
class BatchOutcome:
    """Everything one batch produces, sent and committed together.

    Each record is routed into a child outcome that joins its parent only when the record is done,
    so that a fault half-way through a record leaves nothing of it behind.
    """

    outputs: list[Output] = field(default_factory=list)
    routed: dict[str, dict[str, Any]] = field(default_factory=dict)
    queries: dict[str, dict[str, Any]] = field(default_factory=dict)  # bus.queries keys: each its own writer
    consents: dict[str, dict[str, Any]] = field(default_factory=dict)  # consents and biometric matches
    case_groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    decisions: list[tuple[str, str, str | None]] = field(default_factory=list)  # type, outcome, reason
    dead_letters: list[str] = field(default_factory=list)  # error codes
    created_ms: list[int] = field(default_factory=list)  # record timestamps, for latency
    encoded: dict[str, bytes] = field(default_factory=dict)  # routed values as written to bus.routed
    parent: BatchOutcome | None = None

    def child(self) -> BatchOutcome:
        return BatchOutcome(parent=self)

    def join(self) -> None:
        """Add this record's outcome to its batch."""
        p = self.parent
        assert p is not None
        p.outputs += self.outputs
        p.routed.update(self.routed)
        p.queries.update(self.queries)
        p.consents.update(self.consents)
        p.case_groups.update(self.case_groups)
        p.decisions += self.decisions
        p.dead_letters += self.dead_letters
        p.created_ms += self.created_ms

    def pending_routed(self, message_id: str) -> dict[str, Any] | None:
        found = self.routed.get(message_id)
        return found if found is not None or self.parent is None else self.parent.pending_routed(message_id)

    def pending_consent(self, key: str) -> dict[str, Any] | None:
        found = self.consents.get(key)
        return found if found is not None or self.parent is None else self.parent.pending_consent(key)

    def pending_case_group(self, name: str) -> dict[str, Any] | None:
        found = self.case_groups.get(name)
        return found if found is not None or self.parent is None else self.parent.pending_case_group(name)

    def pending_groups(self) -> list[dict[str, Any]]:
        """Every case group this outcome and its parents write (the latest value per name)."""
        chain = {} if self.parent is None else {g["name"]: g for g in self.parent.pending_groups()}
        chain.update(self.case_groups)
        return list(chain.values())


@dataclass(frozen=True, slots=True)
class Source:
    topic: str
    partition: int
    offset: int
    timestamp: int | None
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    header_error: str | None = None  # why the headers could not be read (they play no part in routing)

    @classmethod
    def of(cls, message: Any) -> Source:
        """From a confluent-kafka Message; whatever its headers hold, this does not raise.

        The client raises SystemError (UnicodeDecodeError as its cause) for a header key that is
        not UTF-8, and may leave that error pending until a later call: reads are tried twice.
        """
        try:
            return cls._read(message)
        except SystemError:  # a pending error surfaced after the reads: it is cleared now
            return cls._read(message)

    @classmethod
    def _read(cls, message: Any) -> Source:
        header_error = None
        try:
            headers = tuple(_twice(message.headers) or ())
        except (UnicodeError, ValueError, TypeError, SystemError) as exc:
            headers, header_error = (), f"headers unreadable: {exc.__cause__ or exc}"
        kind, timestamp = _twice(message.timestamp)
        return cls(_twice(message.topic), _twice(message.partition), _twice(message.offset),
                   timestamp if kind else None, _twice(message.key), _twice(message.value), headers,
                   header_error)


def _twice(read: Callable[[], Any]) -> Any:
    """`read()`, once more if the first call met an error the client library left pending."""
    try:
        return read()
    except SystemError as exc:
        if exc.__cause__ is not None and read.__name__ == "headers":
            raise  # the headers themselves are unreadable
        return read()


Decoded = tuple[str, dict[str, Any]] | DecodeError
"""A record's type and content, or why it could not be read."""


def _key(envelope: dict[str, Any]) -> bytes:
    """Partition key: the case id when present, else the message id."""
    return str(envelope["case_id"] or envelope["message_id"]).encode()


class Pipeline:
    """Decode, evaluate, and build the output records of one input record."""

    def __init__(self, codec: Codec, engine: Callable[[], PolicyEngine], state: RouterState,
                 topics: Topics, *, clock: Callable[[], float] = time.time,
                 deadlines: DeadlineTable | None = None, limits: Limits | None = None) -> None:
        self.topics = topics
        self.limits = limits or Limits()
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

    def unknown_refs(self, item: Decoded, out: BatchOutcome) -> frozenset[str]:
        """The messages the record cites that this instance has not seen (yet), in its state or
        earlier in the same batch."""
        if isinstance(item, DecodeError):
            return frozenset()
        env = item[1]["envelope"]
        return frozenset(ref for ref in (env["correlation_id"], env["derived_from"])
                         if isinstance(ref, str) and L.canonical_uuid(ref) and not self.knows(ref, out))

    def knows(self, message_id: str, out: BatchOutcome | None) -> bool:
        """Whether the message was routed, as far as this instance knows."""
        return message_id in self.state.routed.items or (
            out is not None and out.pending_routed(message_id) is not None)

    def unseen_id(self, item: Decoded) -> bool:
        """True when the record's own id is not in this instance's view of routed messages."""
        return not isinstance(item, DecodeError) and item[1]["envelope"]["message_id"] not in \
            self.state.routed.items

    # -- one record, one outcome ----------------------------------------------------------------
    def handle(self, src: Source, item: Decoded, out: BatchOutcome) -> None:
        """Route or dead-letter one record; nothing it holds can make this raise.

        A fault while routing (a bug, a value no schema foresaw) dead-letters the record with
        ROUTING_FAILED and its traceback in the log; a fault while dead-lettering falls back to a
        minimal dead letter made of fixed-size fields only.
        """
        record_out = out.child()
        try:
            if isinstance(item, DecodeError):
                self.dead_letter(src, item.code, str(item), record_out)
            else:
                self.route(src, item[0], item[1], record_out)
        except Exception as exc:  # the one place a record's own fault stops
            log.exception("routing failed; record dead-lettered", topic=src.topic,
                          partition=src.partition, offset=src.offset)
            record_out = out.child()
            about = item[1].get("envelope") if not isinstance(item, DecodeError) else None
            try:
                self.dead_letter(src, L.ROUTING_FAILED, f"{type(exc).__name__}: {str(exc)[:500]}",
                                 record_out, about=about if isinstance(about, dict) else None)
            except Exception:  # even the dead letter failed: keep the minimum
                log.exception("dead letter failed; minimal one written", offset=src.offset)
                record_out = out.child()
                self._minimal_dead_letter(src, L.ROUTING_FAILED, type(exc).__name__, record_out)
        record_out.join()

    # -- stage 2: decide and emit -----------------------------------------------------------------
    def dead_letter(self, src: Source, code: str, error: str, out: BatchOutcome, *,
                    claimed: str | None = None, about: dict[str, Any] | None = None,
                    public: tuple[str, str] | None = None) -> None:
        """Refuse a record whole; `about` is its envelope when it could be read, so that the
        sender's REJECTED receipt and the audit record name the message. `public` is the code and
        reason the sender may see, when the detail (kept in the dead letter and the audit) is not
        its own to know."""
        owner = self.topics.parse_outbox(src.topic)
        owner_code = owner[1] if owner else None
        claimed = claimed[:_LOG_TEXT] if isinstance(claimed, str) else None
        headers, header_bytes = _letter_headers(src)
        size = len(src.value or b"") + len(src.key or b"") + header_bytes
        if size > self.limits.max_dead_letter_bytes or (src.header_error is not None and not headers):
            self._minimal_dead_letter(src, code, error, out, claimed=claimed)
        else:
            letter = {
                "dead_letter_id": str(uuid.uuid4()), "failed_at": self.now_ms(), "service": SERVICE,
                "source_topic": src.topic, "source_partition": src.partition, "source_offset": src.offset,
                "source_timestamp": src.timestamp, "key": src.key, "value": src.value,
                "headers": headers, "error_code": code, "error": error,
                "claimed_originator": claimed, "outbox_owner": owner_code,
            }
            out.outputs.append(Output(self.topics.deadletter, _bounded_key(src.key),
                                      self.codec.encode("DeadLetter", letter)))
            out.dead_letters.append(code)
        log.warning("dead-lettered", error_code=code, error=error[:_LOG_TEXT], topic=src.topic,
                    partition=src.partition, offset=src.offset, claimed_originator=claimed)
        if owner is None:
            return
        about_id = about.get("message_id") if about else None
        about_id = about_id if isinstance(about_id, str) and L.canonical_uuid(about_id) else None
        case_id = about.get("case_id") if about else None
        case_id = case_id if isinstance(case_id, str) and len(case_id) <= self.limits.max_id_length else None
        # tell the sender its record was refused, without echoing it
        shown_code, shown = public or (code, error)
        receipt = self._receipt(owner[1], "REJECTED", about=None, message_type=owner[0],
                                recipient=None, reason_code=shown_code, reason=shown[:1000],
                                about_id=about_id, case_id=case_id)
        out.outputs.append(Output(self.topics.receipts(owner[1]), None, receipt))
        out.outputs.append(Output(self.topics.audit, None, self.codec.encode("AuditRecord", {
            "audit_id": str(uuid.uuid4()), "decided_at": self.now_ms(), "service": SERVICE,
            # an unreadable record has no id of its own: the audit names where it was read
            "message_id": about_id or str(uuid.uuid5(uuid.NAMESPACE_URL, f"kafka:{src.topic}/"
                                                     f"{src.partition}/{src.offset}")),
            "message_type": owner[0], "originator": owner[1], "case_id": case_id,
            "correlation_id": None, "derived_from": None, "recipient": None, "decision": "REJECTED",
            "reason_code": code, "reason": error[:1000], "redactions": [], "tlp": "AMBER",
            "handling_codes": [], "data_categories": [], "deadline": None,
            "source_topic": src.topic, "source_partition": src.partition, "source_offset": src.offset,
            "trace_id": None,
        })))

    def _minimal_dead_letter(self, src: Source, code: str, error: str, out: BatchOutcome, *,
                             claimed: str | None = None) -> None:
        """A dead letter too big or too odd to keep whole: where it was, how big, and its digest,
        so that an operator can fetch the original from the outbox while it is retained."""
        value = src.value or b""
        digest = hashlib.sha256(value).hexdigest()
        note = (f"{error[:500]} [kept in minimal form: value of {len(value)} bytes, sha256 {digest}; "
                f"key of {len(src.key or b'')} bytes; {len(src.headers)} headers"
                f"{'; ' + src.header_error[:200] if src.header_error else ''}]")
        owner = self.topics.parse_outbox(src.topic)
        letter = {
            "dead_letter_id": str(uuid.uuid4()), "failed_at": self.now_ms(), "service": SERVICE,
            "source_topic": src.topic[:255], "source_partition": src.partition, "source_offset": src.offset,
            "source_timestamp": src.timestamp, "key": None, "value": None, "headers": {},
            "error_code": code, "error": note, "claimed_originator": claimed,
            "outbox_owner": owner[1] if owner else None,
        }
        out.outputs.append(Output(self.topics.deadletter, None, self.codec.encode("DeadLetter", letter)))
        out.dead_letters.append(code)

    def _prior(self, message_id: str, out: BatchOutcome) -> dict[str, Any] | None:
        """What the bus recorded when it routed this id before, in this batch or earlier."""
        return out.pending_routed(message_id) or self.state.routed.items.get(message_id)

    def route(self, src: Source, message_type: str, record: dict[str, Any], out: BatchOutcome, *,
              release_to: frozenset[str] | None = None) -> None:
        """`release_to`: a held DATA_REQUEST routed again, once its biometric match is decided, for
        the recipients it was held for."""
        env = record["envelope"]
        owner = self.topics.parse_outbox(src.topic)
        assert owner is not None  # decode() checked it
        refused = L.check_input(self.limits, len(src.value or b""), record)
        if refused is not None:
            self.dead_letter(src, *refused, out, claimed=env.get("originator"), about=env)
            return
        digest = hashlib.sha256(src.value or b"").hexdigest()[:32]
        prior = self._prior(env["message_id"], out)
        if prior is not None and release_to is None:
            self._seen_before(src, message_type, record, out, prior=prior, digest=digest)
            return
        now = self.now_ms()
        view = self.state.overlay(out.pending_routed, out.pending_consent, out.pending_case_group,
                                  out.pending_groups)
        engine = self.engine()
        result: RoutingResult = engine.route(
            message_type, record, outbox_owner=owner[1], now_ms=now, state=view)
        if release_to is not None:
            result = RoutingResult(tuple(d for d in result.decisions if d.recipient in release_to),
                                   result.rejection)
        rejection = result.rejection
        if rejection is not None:
            self.dead_letter(src, rejection.code, rejection.reason, out, claimed=env.get("originator"),
                             about=env, public=(rejection.public_code, rejection.public_reason))
            return
        refused = L.check_recipients(self.limits, len(result.decisions))
        if refused is not None:
            self.dead_letter(src, *refused, out, claimed=env.get("originator"), about=env)
            return
        original = src.value
        if message_type == "Query":
            deadline = self.deadlines.stamp(env["priority"], record["accessibility"], now,
                                            record["deadline"])
            if deadline != record["deadline"]:  # the recipient sees the deadline the bus stamped
                record = {**record, "deadline": deadline}
                original = self.codec.encode("Query", record)
        delivered: list[str] = list(prior["d"]) if prior is not None and release_to is not None else []
        self._deliver(src, message_type, record, result, out, original=original, delivered=delivered,
                      sender=owner[1], directory=engine.directory, view=view, now=now)
        expires = engine.config.expires_ms(message_type, now, record.get("deadline")
                                           if message_type == "Query" else None)
        change = record.get("case_group") if message_type == "Query" else None
        out.routed[env["message_id"]] = routed_value(
            message_type, env["originator"], list(env["handling_codes"]), delivered,
            kind=record.get("kind") if message_type == "Query" else None,
            derived_from=env["derived_from"], digest=digest, restricted=list(env["restricted"]),
            tlp=env["tlp"], source=(src.partition, src.offset), expires=expires, routed_at=now,
            group=change["group"] if change and change["action"] in INVITING else None,
            categories=_biometric_categories(record) if record.get("kind") == "HIT_CHECK" else None)
        log.debug("routed", message_id=env["message_id"], case_id=env["case_id"],
                  originator=env["originator"], trace_id=env["trace_id"], message_type=message_type,
                  delivered=len(delivered), decisions=len(result.decisions))
        copies = {d.recipient for d in result.decisions if d.copy} if message_type == "Query" else set()
        asked = [code for code in delivered if code not in copies]
        if message_type == "Query" and asked:  # a SPOC's copy is for its information: no answer is due
            out.queries[env["message_id"]] = {**open_query(record, asked, record["deadline"]), "x": expires}
        if message_type == "Reply" and delivered:
            self._reply_delivered(src, record, out, view, now=now)
        if change:
            self._case_group_changed(src, record, change, out, delivered=delivered, view=view, now=now)
        held = [d.recipient for d in result.decisions if d.reason_code == R.MATCH_NOT_CONFIRMED]
        if held:
            self._keep_held(src, record, held, out, view=view)
        out.created_ms.append(src.timestamp or env["created_at"])

    def _deliver(self, src: Source, message_type: str, record: dict[str, Any], result: RoutingResult,
                 out: BatchOutcome, *, original: bytes | None, delivered: list[str], sender: str,
                 directory: Directory, view: RoutedView, now: int) -> None:
        """The inbox copies, officers' copies, audit records and receipts of one routing result (the
        directory is the one the engine routed with)."""
        env, key = record["envelope"], _key(record["envelope"])
        for decision in result.decisions:
            if decision.outcome == "DELIVER":
                delivered.append(decision.recipient)
                value = original if not decision.redactions and decision.copy is None else self.codec.encode(
                    message_type, _marked(apply_redactions(record, decision.redactions)
                                          if decision.redactions else record, decision.copy))
                assert value is not None
                out.outputs.append(Output(self.topics.inbox(message_type, decision.recipient), key, value))
                for officer in _officers_covering(directory, decision.recipient, env, now, sender=sender):
                    self._officer_copy(src, message_type, record, decision, out, officer=officer, now=now)
            self._audit_decision(src, message_type, record, decision, now=now, out=out)
        for waived in result.waived:
            out.outputs.append(Output(self.topics.audit, key, self.codec.encode("AuditRecord", self._audit(
                src, message_type, record, waived, now=now, decision="WAIVED"))))
        for decision in result.sender_view:
            self._tell_sender(message_type, record, decision, out, to=sender)
        for hub in self._hubs_to_notify(message_type, env, result.notify_hub, view):
            kind = _hub_receipt_kind(message_type, record)
            out.outputs.append(Output(self.topics.receipts(hub), key, self._receipt(
                hub, kind, about=env, message_type=message_type, recipient=env["originator"],
                about_id=env["message_id"], case_id=env["case_id"])))

    def _hubs_to_notify(self, message_type: str, env: dict[str, Any], hubs: tuple[str, ...],
                        view: RoutedView) -> list[str]:
        """The hubs the engine chose, less those the answered alert's own terms keep out (a FLAG or
        HIT notice about an alert tells of that alert too)."""
        if message_type != "Reply" or not hubs:
            return list(hubs)
        answered = env["correlation_id"]
        terms = view.terms_of(answered)
        if terms is None:
            return list(hubs)
        engine = self.engine()
        received = view.delivered_to(answered) or frozenset()
        return [hub for hub in hubs
                if engine.notice_allowed(hub, restricted=terms[0], tlp=terms[1], received=received)]

    def _seen_before(self, src: Source, message_type: str, record: dict[str, Any], out: BatchOutcome, *,
                     prior: dict[str, Any], digest: str) -> None:
        """An id the bus routed already: a byte-identical re-send by its originator is acknowledged
        and not delivered again (a retry after a lost answer is safe); anything else is refused,
        and the state of the first message is never touched."""
        env = record["envelope"]
        if prior.get("p") == [src.partition, src.offset] and prior.get("s") == digest:
            return  # read again after a crash or a rebalance: it was routed, and its outputs committed
        if prior.get("o") == env["originator"] and prior.get("s") == digest:
            out.outputs.append(Output(self.topics.receipts(env["originator"]), _key(env), self._receipt(
                env["originator"], "ACKNOWLEDGED", about=env, message_type=message_type, recipient=None,
                reason="already routed; not delivered again", about_id=env["message_id"],
                case_id=env["case_id"])))
            acknowledged = Decision(recipient=env["originator"], outcome="DELIVER", reason_code=None,
                                    reason="byte-identical re-send, acknowledged", rule="message-id")
            audit = self._audit(src, message_type, record, acknowledged, now=self.now_ms(),
                                decision="ACKNOWLEDGED")
            out.outputs.append(Output(self.topics.audit, _key(env), self.codec.encode("AuditRecord", audit)))
            return
        # the sender may not learn who owns the id: the reason names only its own message
        self.dead_letter(src, L.DUPLICATE_MESSAGE_ID, "This message id was already used; send the message "
                         "with a new id.", out, claimed=env.get("originator"), about=None)

    def _reply_delivered(self, src: Source, reply: dict[str, Any], out: BatchOutcome, view: RoutedView, *,
                         now: int) -> None:
        """A delivered reply may close a query, record a consent, or tell a data owner of a hit."""
        env = reply["envelope"]
        query_id = env["correlation_id"]
        if view.query_kind_of(query_id) is not None:  # an answer to a query, not to an alert
            key, value = answered_query(query_id, env["originator"], reply["outcome"], now)
            out.queries[key] = {**value, "x": view.expiry_of(query_id)}  # forgotten with the query
        if reply["outcome"] == "GRANTED":
            self._record_consent(reply, out, view)
        owner = reply["data_owner"]
        asker = view.originator_of(query_id)
        if reply["outcome"] == "HIT" and owner and owner not in (env["originator"], asker):
            self._notify_hit(src, reply, owner, asker, out, view=view, now=now)
        group = view.invitation_of(query_id)
        if group is not None:
            self._invitation_answered(src, reply, group, out, view, now=now)
        if reply.get("confirmation") is not None:
            self._match_decided(src, reply, out, view, now=now)
        elif reply["outcome"] == "HIT" and reply["reference"] and view.categories_of(query_id) \
                and view.match(env["originator"], reply["reference"]) is None:
            self._match_pending(src, reply, out, view, now=now)

    # -- case groups formed on the bus ------------------------------------------------------------
    def _case_group_changed(self, src: Source, query: dict[str, Any], change: dict[str, Any],
                            out: BatchOutcome, *, delivered: list[str], view: RoutedView, now: int) -> None:
        """Apply a routed case-group change to the group's state; tell the members what changed."""
        env = query["envelope"]
        name, action = change["group"], change["action"]
        current = view.case_group(name)
        tell: frozenset[str] = frozenset()
        if action == "PROPOSE":
            group = proposed(change, env, delivered, now)
        else:
            assert current is not None  # the engine refused changes to a group the bus does not know
            group, tell = changed(current, change, env, delivered, now)
        out.case_groups[name] = group.to_value()
        what = _group_news(group, action, env["originator"], change)
        self._record(src, "Query", query, out, code=_GROUP_CODES[action], reason=what, now=now)
        for code in sorted(tell):
            out.outputs.append(Output(self.topics.receipts(code), _key(env), self._receipt(
                code, "GROUP_CHANGED", about=env, message_type="Query", recipient=env["originator"],
                reason_code=_GROUP_CODES[action], reason=what, about_id=env["message_id"],
                case_id=env["case_id"])))

    def _invitation_answered(self, src: Source, reply: dict[str, Any], name: str, out: BatchOutcome,
                             view: RoutedView, *, now: int) -> None:
        env = reply["envelope"]
        group = view.case_group(name)
        accepted = reply["outcome"] == "GRANTED"
        after = None if group is None else answered(group, env["originator"], env["correlation_id"],
                                                    accepted=accepted, at=now, reply_id=env["message_id"])
        if after is None:
            return  # withdrawn, answered before, or the group has ended: the answer changes nothing
        out.case_groups[name] = after.to_value()
        verb = "joined" if accepted else "declined to join"
        code = R.CASE_GROUP_JOINED if accepted else R.CASE_GROUP_DECLINED
        self._record(src, "Reply", reply, out, code=code, now=now,
                     reason=f"{env['originator']} {verb} the case group {name}.")

    def end_case_groups(self, now: int, out: BatchOutcome) -> int:
        """Groups whose end date has passed, closed on record, each member told (GROUP_CHANGED). The
        engine already routes nothing to them; this tells the members and audits the end."""
        due = [CaseGroup.from_value(v) for v in self.state.running_groups() if int(v["ends_at"]) <= now]
        for group in due:
            after = ended(group, now)
            out.case_groups[group.name] = after.to_value()
            opened = next((h.get("message_id") for h in group.history if h.get("action") == "PROPOSED"), None)
            what = f"The case group {group.name} reached its end date and reaches nobody now."
            about: dict[str, Any] = {"message_id": opened or random_uuid(), "originator": group.initiator,
                     "case_id": group.case_id, "correlation_id": None, "derived_from": None, "tlp": "AMBER",
                     "handling_codes": [], "data_categories": [], "trace_id": None}
            state = Source(self.topics.casegroups, -1, -1, None, group.name.encode(), None)
            self._record(state, "Query", {"envelope": about}, out, code=R.CASE_GROUP_ENDED, reason=what,
                         now=now)
            for code in sorted(group.members):
                out.outputs.append(Output(self.topics.receipts(code), group.name.encode(), self._receipt(
                    code, "GROUP_CHANGED", about=None, message_type="Query", recipient=group.initiator,
                    reason_code=R.CASE_GROUP_ENDED, reason=what, about_id=opened, case_id=group.case_id)))
        return len(due)

    # -- Prum II: a person confirms a biometric match before data follows --------------------------
    def _match_pending(self, src: Source, reply: dict[str, Any], out: BatchOutcome, view: RoutedView, *,
                       now: int) -> None:
        env = reply["envelope"]
        query_id = env["correlation_id"]
        out.consents[match_key(env["originator"], reply["reference"])] = {
            "status": "PENDING", "asker": view.originator_of(query_id), "query": query_id,
            "hit": env["message_id"], "categories": view.categories_of(query_id), "held": [],
            "x": view.expiry_of(query_id)}
        self._record(src, "Reply", reply, out, code=R.MATCH_PENDING, now=now,
                     reason=f"{env['originator']}'s biometric HIT {reply['reference']!r} awaits a person's "
                     "confirmation before data may follow.")

    def _match_decided(self, src: Source, reply: dict[str, Any], out: BatchOutcome, view: RoutedView, *,
                       now: int) -> None:
        """Record the verdict, then route the requests held for it (delivered, or denied if rejected)."""
        env, confirmation = reply["envelope"], reply["confirmation"]
        key = match_key(env["originator"], reply["reference"])
        entry = view.match(env["originator"], reply["reference"])
        if entry is None:
            return
        confirmed = bool(confirmation["confirmed"])
        out.consents[key] = {**entry, "status": "CONFIRMED" if confirmed else "REJECTED", "held": [],
                             "verified_by": confirmation["verified_by"], "decided_at": now,
                             "decision": env["message_id"]}
        verdict = "confirmed" if confirmed else "rejected"
        self._record(src, "Reply", reply, out, code=R.MATCH_CONFIRMED if confirmed else R.MATCH_REJECTED,
                     reason=f"{env['originator']} {verdict} the biometric match {reply['reference']!r}, "
                     f"verified by {str(confirmation['verified_by'])[:200]}.", now=now)
        for held in entry.get("held") or ():
            value = base64.b64decode(held["v"])
            try:
                name, request = self.codec.decode(value)
            except DecodeError:
                continue  # it was read once already; a schema gone since cannot be helped
            again = Source(held["t"], held["p"], held["o"], held.get("ts"), None, value)
            self.route(again, name, request, out, release_to=frozenset({env["originator"]}))

    def _keep_held(self, src: Source, request: dict[str, Any], held_for: list[str], out: BatchOutcome, *,
                   view: RoutedView) -> None:
        """Keep a DATA_REQUEST held for a pending match with the match, to route it once decided."""
        reference = request["reference"]
        for code in held_for:
            entry = view.match(code, reference)
            if entry is None:
                continue
            kept = list(entry.get("held") or ())
            if sum(len(h["v"]) for h in kept) + len(src.value or b"") * 4 // 3 > MAX_HELD_BYTES:
                log.warning("held request not kept: too many held for one match", match=reference[:_LOG_TEXT])
                continue
            kept.append({"v": base64.b64encode(src.value or b"").decode(), "t": src.topic, "p": src.partition,
                         "o": src.offset, "ts": src.timestamp})
            out.consents[match_key(code, reference)] = {**entry, "held": kept}

    def _record(self, src: Source, message_type: str, record: dict[str, Any], out: BatchOutcome, *,
                code: str, reason: str, now: int) -> None:
        """The audit record of a change of state a message made (recipient null)."""
        note = Decision(recipient="", outcome="DELIVER", reason_code=code, reason=reason, rule="state")
        audit = self._audit(src, message_type, record, note, now=now, decision="RECORDED")
        audit["recipient"] = None
        out.outputs.append(Output(self.topics.audit, _key(record["envelope"]),
                                  self.codec.encode("AuditRecord", audit)))

    def _officer_copy(self, src: Source, message_type: str, record: dict[str, Any], decision: Decision,
                      out: BatchOutcome, *, officer: Officer, now: int) -> None:
        """A liaison officer's copy of a delivery to its agency, marked, and audited under its name."""
        env = record["envelope"]
        base = apply_redactions(record, decision.redactions) if decision.redactions else record
        value = self.codec.encode(message_type, _marked(base, ("LIAISON_OFFICER", decision.recipient)))
        out.outputs.append(Output(self.topics.inbox(message_type, officer.code), _key(env), value))
        copy = Decision(officer.code, "DELIVER", R.OFFICER_COPY,
                        f"Copy for {officer.code}, liaison officer of "
                        f"{decision.recipient} ({officer.post or 'posted abroad'}), whose delegation covers "
                        "the message.", "officer-copy", decision.redactions)
        audit = self._audit(src, message_type, record, copy, now=now,
                            decision="REDACTED" if decision.redactions else "DELIVERED")
        audit["officer"] = officer.code
        out.outputs.append(Output(self.topics.audit, _key(env), self.codec.encode("AuditRecord", audit)))

    def _notify_hit(self, src: Source, reply: dict[str, Any], owner: str, asker: str | None,
                    out: BatchOutcome, *, view: RoutedView, now: int) -> None:
        """Prüm / I-24/7: the owner of a record that hit is told who searched it (not the data),
        unless the terms of the query or of the reply keep it out (restricted, TLP, status)."""
        env = reply["envelope"]
        engine = self.engine()
        query_terms = view.terms_of(env["correlation_id"]) or (frozenset(), "RED")
        received = view.delivered_to(env["correlation_id"]) or frozenset()
        for restricted, tlp, got in ((query_terms[0], query_terms[1], received),
                                     (env["restricted"], env["tlp"], ())):
            verdict = engine.notice_decision(owner, restricted=restricted, tlp=tlp, received=got)
            if verdict.outcome != "DELIVER":
                out.outputs.append(Output(self.topics.audit, _key(env), self.codec.encode(
                    "AuditRecord", self._audit(src, "Reply", reply, verdict, now=now, decision="DENIED"))))
                return
        out.outputs.append(Output(self.topics.receipts(owner), _key(env), self._receipt(
            owner, "HIT_NOTIFICATION", about=env, message_type="Reply", recipient=asker,
            reason=f"{env['originator']} reported a hit on your record to {asker}",
            about_id=env["message_id"], case_id=env["case_id"], reference=reply["reference"])))
        notice = Decision(recipient=owner, outcome="DELIVER", reason_code=None,
                          reason="hit notification to the data owner", rule="hit_notification")
        out.outputs.append(Output(self.topics.audit, _key(env), self.codec.encode(
            "AuditRecord", self._audit(src, "Reply", reply, notice, now=now, decision="NOTIFIED"))))

    def _tell_sender(self, message_type: str, record: dict[str, Any], decision: Decision,
                     out: BatchOutcome, *, to: str) -> None:
        """The sender's receipt of one decision, in the words it may read (its public view); `to` is
        the outbox's owner: the originator, or the liaison officer who sent for it."""
        env = record["envelope"]
        out.outputs.append(Output(self.topics.receipts(to), _key(env), self._receipt(
            to, _RECEIPT_KIND[decision.outcome], about=env, message_type=message_type,
            recipient=decision.recipient, reason_code=decision.public_code, reason=decision.public_reason,
            about_id=env["message_id"], case_id=env["case_id"],
            deadline=record.get("deadline") if message_type == "Query" else None)))

    def _audit_decision(self, src: Source, message_type: str, record: dict[str, Any], decision: Decision,
                        *, now: int, out: BatchOutcome) -> None:
        """The audit record of one decision, with the whole detail."""
        env = record["envelope"]
        redacted = decision.outcome == "DELIVER" and bool(decision.redactions)
        reason = decision.reason
        if redacted and reason is None:
            reason = "delivered with " + ", ".join(decision.redactions) + " removed"
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
            "audit_id": random_uuid(), "decided_at": now, "service": SERVICE,
            "message_id": env["message_id"], "message_type": message_type,
            "originator": env["originator"], "case_id": env["case_id"],
            "correlation_id": env["correlation_id"], "derived_from": env["derived_from"],
            "recipient": verdict.recipient, "decision": decision,
            "reason_code": verdict.reason_code, "reason": reason or verdict.reason,
            "redactions": list(verdict.redactions), "tlp": env["tlp"],
            "handling_codes": env["handling_codes"], "data_categories": env["data_categories"],
            "deadline": record.get("deadline") if message_type == "Query" else None,
            "source_topic": src.topic, "source_partition": src.partition, "source_offset": src.offset,
            "trace_id": env["trace_id"], "officer": env.get("officer"),
        }

    def _record_consent(self, reply: dict[str, Any], out: BatchOutcome, view: RoutedView) -> None:
        """A GRANTED reply to a CONSENT query puts the provider's consent on record."""
        query_id = reply["envelope"]["correlation_id"]
        if view.query_kind_of(query_id) != "CONSENT":
            return
        shared = view.derived_from_of(query_id)
        requester = view.originator_of(query_id)
        if shared is None or requester is None:
            return
        if view.originator_of(shared) != reply["envelope"]["originator"]:
            return  # only the provider of the H2 information can consent to passing it on
        out.consents[consent_key(shared, requester)] = {
            "provider": reply["envelope"]["originator"], "granted_at": self.now_ms(),
            "reply_id": reply["envelope"]["message_id"], "query_id": query_id,
            "x": view.expiry_of(shared),  # a consent lasts as long as the bus remembers the message
        }

    def _receipt(self, to: str, kind: str, *, about: dict[str, Any] | None, message_type: str,
                 recipient: str | None, reason_code: str | None = None, reason: str | None = None,
                 about_id: str | None, case_id: str | None, deadline: int | None = None,
                 reference: str | None = None) -> bytes:
        now = self.now_ms()
        receipt = {
            "envelope": {
                "message_id": random_uuid(), "correlation_id": about_id, "case_id": case_id,
                "originator": BUS_ORIGINATOR, "addressing": {"agencies": [to]}, "created_at": now,
                "tlp": "AMBER_STRICT", "trace_id": about["trace_id"] if about else None,
            },
            "kind": kind, "message_type": message_type, "recipient": recipient,
            "reason_code": reason_code, "reason": reason, "deadline": deadline, "reference": reference,
        }
        return self.codec.encode("Receipt", receipt)


def _marked(record: dict[str, Any], copy: tuple[str, str] | None) -> dict[str, Any]:
    """The record as delivered as a copy: envelope.copy says why and for whom."""
    if copy is None:
        return record
    return {**record, "envelope": {**record["envelope"], "copy": {"kind": copy[0], "addressee": copy[1]}}}


def _officers_covering(directory: Directory, agency: str, env: dict[str, Any], now: int, *,
                       sender: str) -> list[Officer]:
    """The agency's liaison officers in force whose delegation covers this message (its case, or
    the originator's country); never the officer who sent it. Looked up per recipient: an agency
    has a handful of officers, the directory may hold thousands."""
    officers = directory.officers_of(agency)
    if not officers:
        return []
    case, country = env.get("case_id"), country_of(env["originator"])
    return [o for o in officers if o.code != sender and o.in_force(now) and o.covers(case, (country,))]


def _biometric_categories(query: dict[str, Any]) -> list[str]:
    """The biometric categories a HIT_CHECK declares or searches by: its HITs need confirming."""
    found = set(BIOMETRIC_CATEGORIES.intersection(query["envelope"].get("data_categories") or ()))
    if query.get("subject") or query.get("criteria"):
        found.update(category for _, category in locate(query) or ())
    return sorted(found & BIOMETRIC_CATEGORIES)


def _group_news(group: CaseGroup, action: str, by: str, change: dict[str, Any]) -> str:
    """What a case-group change did, in one sentence for the audit and the members' receipts."""
    name = group.name
    if action == "PROPOSE":
        invited = ", ".join(sorted(group.invited)) or "nobody"
        return f"{by} proposed the case group {name} and invited {invited}."
    if action == "ADD":
        return f"{by} invited more agencies to the case group {name}."
    if action == "REMOVE":
        return f"{by} removed {', '.join(sorted(change.get('members') or ()))} from the case group {name}."
    if action == "EXTEND":
        until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(group.ends_at / 1000))
        return f"{by} extended the case group {name} until {until}."
    return f"{by} closed the case group {name}; it reaches nobody now."


def _hub_receipt_kind(message_type: str, record: dict[str, Any]) -> str:
    if message_type == "Reply":
        return "FLAGGED" if record["outcome"] == "FLAG" else "HIT_NOTIFICATION"
    return "HELD_FOR_REVIEW"


def _letter_headers(src: Source) -> tuple[dict[str, bytes], int]:
    """A record's headers as the DeadLetter map can hold them (text keys, bytes values; a null
    value becomes empty bytes, a repeated key keeps its last value), and their size in bytes."""
    headers: dict[str, bytes] = {}
    size = 0
    for key, value in src.headers:
        text = key if isinstance(key, str) else bytes(key).decode("utf-8", "backslashreplace")
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
        data = bytes(value) if value is not None else b""
        headers[text] = data
        size += len(text) + len(data) + 8  # plus the map's own framing
    return headers, size


def _bounded_key(key: bytes | None) -> bytes | None:
    """The dead letter's partition key: the record's own, unless it is oddly long."""
    return key if key is None or len(key) <= 256 else hashlib.sha256(key).digest()


class WrongType(DecodeError):
    """A readable record of another type than its outbox carries (e.g. a Query on alerts.out)."""

    code = "WRONG_TOPIC_TYPE"

