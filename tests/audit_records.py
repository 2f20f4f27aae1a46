"""Audit records and dead letters shaped as the router writes them, for the audit index's tests and
its benchmark (which writes a million of them without running the router)."""

from __future__ import annotations

from typing import Any

from liaison.codec import random_uuid
from liaison.topics import FAMILIES

Record = dict[str, Any]


def audit_record(message_id: str, *, case_id: str | None, decided_at: int, originator: str = "FR-PN",
                 recipient: str | None = "DE-BKA", decision: str = "DELIVERED",
                 message_type: str = "Alert", correlation_id: str | None = None,
                 derived_from: str | None = None, reason_code: str | None = None,
                 reason: str | None = None, offset: int = 0) -> Record:
    """One routing decision, as `services/router/pipeline.py` records it."""
    return {
        "audit_id": random_uuid(), "decided_at": decided_at, "service": "router",
        "message_id": message_id, "message_type": message_type, "originator": originator,
        "case_id": case_id, "correlation_id": correlation_id, "derived_from": derived_from,
        "recipient": recipient, "decision": decision, "reason_code": reason_code, "reason": reason,
        "redactions": ["subject.biometrics"] if decision == "REDACTED" else [], "tlp": "AMBER",
        "handling_codes": [], "data_categories": ["PERSONAL"],
        "deadline": decided_at + 7 * 86_400_000 if message_type == "Query" else None,
        "source_topic": f"{FAMILIES[message_type]}.out.{originator}",
        "source_partition": 0, "source_offset": offset, "trace_id": None,
    }


def audit_key(record: Record) -> bytes | None:
    """The router's key: the case id, else the message id; none for a record refused whole."""
    if record["decision"] == "REJECTED":
        return None
    return str(record["case_id"] or record["message_id"]).encode()


def dead_letter(original: bytes, *, failed_at: int, outbox: str, code: str = "SPOOFED_ORIGINATOR",
                claimed: str | None = "FR-PN", owner: str | None = "IT-PS") -> Record:
    """A record the router refused whole, kept with why."""
    return {
        "dead_letter_id": random_uuid(), "failed_at": failed_at, "service": "router",
        "source_topic": outbox, "source_partition": 0, "source_offset": 0, "source_timestamp": failed_at,
        "key": None, "value": original, "headers": {}, "error_code": code, "error": "refused",
        "claimed_originator": claimed, "outbox_owner": owner,
    }
