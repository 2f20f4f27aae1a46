"""What one input may cost the bus: bounds checked before and after the policy, with stable codes.

A hostile agency holds one valid credential and any Kafka client. Whatever it writes, the router's
work and its output per input record stay below what these bounds allow; past a bound the
message is refused whole (dead letter, REJECTED receipt, audit record), never partly routed.

Worst case per input record (documented in the README): with R = `max_recipients` and H = the
number of active hubs, a routed message causes at most 3R + H + 5 records (a delivery, a receipt
and an audit record per recipient, a notice per hub, a hit notice and its audit record, and the
`bus.routed`, `bus.queries` and `bus.consents` updates); a refused one at most 3 (dead letter,
receipt, audit record).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# -- codes of refusals that are not the sharing policy's -------------------------------------------
TOO_LARGE = "TOO_LARGE"
TOO_MANY_ADDRESSEES = "TOO_MANY_ADDRESSEES"
TOO_MANY_GROUPS = "TOO_MANY_GROUPS"
TOO_MANY_RECIPIENTS = "TOO_MANY_RECIPIENTS"
FIELD_TOO_LONG = "FIELD_TOO_LONG"
INVALID_ID = "INVALID_ID"
DUPLICATE_MESSAGE_ID = "DUPLICATE_MESSAGE_ID"
ROUTING_FAILED = "ROUTING_FAILED"

CODES: dict[str, str] = {
    TOO_LARGE: "The record is larger than `max_record_bytes`.",
    TOO_MANY_ADDRESSEES: "The addressing names more agencies than `max_named`.",
    TOO_MANY_GROUPS: "The addressing names more groups than `max_groups`.",
    TOO_MANY_RECIPIENTS: "After group and broadcast expansion the message has more recipients than "
                         "`max_recipients`.",
    FIELD_TOO_LONG: "A free-form identifier (case id, trace id, reference, an agency or group code) is "
                    "longer than `max_id_length`.",
    INVALID_ID: "A message id, correlation id or derived_from is not a UUID in canonical form.",
    DUPLICATE_MESSAGE_ID: "The message id was already routed: a message id belongs to the agency that "
                          "sent it first, and a different message may not reuse it.",
    ROUTING_FAILED: "The router could not route this record (an internal fault, logged); it was "
                    "dead-lettered so that routing goes on for everyone else.",
}
"""Code -> what it means; the README prints these beside the policy's reason codes."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds per input record; defaults sized for real traffic (see RouterSettings)."""

    max_record_bytes: int = 900 * 1024
    max_named: int = 500
    max_groups: int = 20
    max_recipients: int = 5000
    max_id_length: int = 128
    max_dead_letter_bytes: int = 960 * 1024


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def canonical_uuid(value: str) -> bool:
    """True for the lower-case hyphenated form only (what `str(uuid.UUID(...))` gives), so that
    one id has one spelling."""
    return _CANONICAL_UUID.fullmatch(value) is not None


def check_input(limits: Limits, size: int, record: Mapping[str, Any]) -> tuple[str, str] | None:
    """(code, reason) of the first bound the record breaks, or None; cheap, before the policy."""
    if size > limits.max_record_bytes:
        return TOO_LARGE, f"The record has {size} bytes; the bus takes at most {limits.max_record_bytes}."
    env = record["envelope"]
    for name in ("message_id", "correlation_id", "derived_from"):
        value = env.get(name)
        if value is not None and not canonical_uuid(value):
            return INVALID_ID, f"envelope.{name} is not a canonical UUID."
    return _check_lengths(limits, record) or _check_addressing(limits, env)


def _check_lengths(limits: Limits, record: Mapping[str, Any]) -> tuple[str, str] | None:
    env = record["envelope"]
    longest = limits.max_id_length
    fields = {"envelope.case_id": env.get("case_id"), "envelope.trace_id": env.get("trace_id"),
              "envelope.originator": env.get("originator"), "reference": record.get("reference"),
              "data_owner": record.get("data_owner")}
    for name, value in fields.items():
        if value is not None and len(value) > longest:
            return FIELD_TOO_LONG, f"{name} has {len(value)} characters; at most {longest} are allowed."
    return None


def _check_addressing(limits: Limits, env: Mapping[str, Any]) -> tuple[str, str] | None:
    longest = limits.max_id_length
    addressing = env.get("addressing") or {}
    named = addressing.get("agencies") or ()
    groups = addressing.get("groups") or ()
    if len(named) > limits.max_named:
        return TOO_MANY_ADDRESSEES, f"{len(named)} agencies are named; at most {limits.max_named} may be."
    restricted = env.get("restricted") or ()
    if len(restricted) > limits.max_named:
        return TOO_MANY_ADDRESSEES, (f"{len(restricted)} agencies or countries are restricted; at most "
                                     f"{limits.max_named} may be.")
    if len(groups) > limits.max_groups:
        return TOO_MANY_GROUPS, f"{len(groups)} groups are named; at most {limits.max_groups} may be."
    for code in (*named, *groups, *restricted):
        if len(code) > longest:
            return FIELD_TOO_LONG, f"An agency or group code has {len(code)} characters; at most {longest}."
    return None


def check_recipients(limits: Limits, count: int) -> tuple[str, str] | None:
    """The bound on recipients after expansion, checked on the policy's decisions."""
    if count > limits.max_recipients:
        return TOO_MANY_RECIPIENTS, (f"The addressing reaches {count} recipients; at most "
                                     f"{limits.max_recipients} are allowed.")
    return None
