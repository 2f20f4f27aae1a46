"""Builders that fill an envelope (ids, timestamps, defaults) and check it before anything is sent."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from typing import Any

from liaison.deadlines_table import default_table
from liaison.directory import OFFICER_CODE
from liaison.errors import LiaisonError
from liaison.topics import AGENCY_CODE


class MessageError(LiaisonError, ValueError):
    """A message is incomplete or inconsistent; the sentence says what to fix."""


def now_ms() -> int:
    return int(time.time() * 1000)


def _agencies(codes: Iterable[str], what: str) -> list[str]:
    out = [c.strip().upper() for c in codes]
    bad = [c for c in out if not AGENCY_CODE.match(c)]
    if bad:
        raise MessageError(f"{what}: {', '.join(bad)} is not an agency code like FR-PN or DE-BKA")
    return out


def envelope(
    originator: str, *, to: Iterable[str] = (), groups: Iterable[str] = (), broadcast: bool = False,
    case_id: str | None = None, correlation_id: str | None = None, tlp: str = "AMBER",
    handling: Iterable[str] = (), handling_note: str | None = None, restricted: Iterable[str] = (),
    categories: Iterable[str] = (), priority: str = "NORMAL", purpose: str | None = None,
    legal_basis: str | None = None, language: str = "en", derived_from: str | None = None,
    expires_at: int | None = None, message_id: str | None = None, trace_id: str | None = None,
    officer: str | None = None, spoc_copy_waiver: str | None = None,
) -> dict[str, Any]:
    """A complete Envelope; raises MessageError for what an agency must fix before sending.

    `officer`: a liaison officer sending on the originator's behalf (it writes to its own outboxes);
    `spoc_copy_waiver`: the Directive 2023/977 Art. 4(2) / 8(3) ground for not copying a SPOC."""
    if officer is not None and not OFFICER_CODE.match(officer.strip().upper()):
        raise MessageError(f"officer: {officer} is not an officer code like FR-PN-BOGOTA")
    handling = [h.upper() for h in handling]
    if "H3" in handling and not handling_note:
        raise MessageError("handling code H3 needs its restriction text (handling_note)")
    to, groups = _agencies(to, "to"), [g.strip().upper() for g in groups]
    if not (to or groups or broadcast or correlation_id):
        raise MessageError("nobody is addressed: give agencies, groups or broadcast")
    return {
        "message_id": message_id or str(uuid.uuid4()), "correlation_id": correlation_id,
        "case_id": case_id, "originator": _agencies([originator], "originator")[0],
        "addressing": {"agencies": to, "groups": groups, "broadcast": broadcast},
        "created_at": now_ms(), "expires_at": expires_at, "priority": priority.upper(),
        "tlp": tlp.upper().replace("+", "_").removeprefix("TLP:"), "handling_codes": handling,
        "handling_note": handling_note, "restricted": [r.strip().upper() for r in restricted],
        "data_categories": [c.upper() for c in categories], "purpose": purpose,
        "legal_basis": legal_basis, "language": language, "derived_from": derived_from,
        "redactions": [], "trace_id": trace_id,
        "officer": officer.strip().upper() if officer else None, "copy": None,
        "spoc_copy_waiver": spoc_copy_waiver.upper() if spoc_copy_waiver else None,
    }


def subject(summary: str, *, kind: str = "PERSON", person: dict[str, Any] | None = None,
            identifiers: Iterable[dict[str, Any]] = (), biometrics: dict[str, Any] | None = None,
            ) -> dict[str, Any]:
    return {"kind": kind, "summary": summary, "person": person, "identifiers": list(identifiers),
            "biometrics": biometrics}


def alert(env: dict[str, Any], *, kind: str = "DIFFUSION", colour: str = "BLUE",
          action: str = "LOCATE", reference: str | None = None, subj: dict[str, Any] | None = None,
          status: str = "ISSUED", offence: str | None = None, sensitivity: Iterable[str] = (),
          description: str | None = None, valid_until: int | None = None,
          grading: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "envelope": env, "kind": kind.upper(), "colour": colour.upper(), "status": status.upper(),
        "action": action.upper(), "reference": reference or env["message_id"],
        "subject": subj or subject("not given", kind="OTHER"), "offence": offence,
        "valid_from": env["created_at"], "valid_until": valid_until,
        "sensitivity": [s.upper() for s in sensitivity], "grading": grading,
        "description": description,
    }


def query(env: dict[str, Any], question: str, *, kind: str = "INFORMATION",
          subj: dict[str, Any] | None = None, criteria: dict[str, str] | None = None,
          reference: str | None = None, accessibility: str = "INDIRECT",
          urgency_ground: str | None = None, deadline: int | None = None,
          case_group: dict[str, Any] | None = None) -> dict[str, Any]:
    if env["priority"] == "URGENT" and urgency_ground is None:
        raise MessageError("an URGENT query must name its urgency ground (e.g. THREAT_TO_LIFE_OR_SAFETY)")
    if kind.upper() == "CONSENT" and env["derived_from"] is None:
        raise MessageError("a CONSENT query names the H2 message it asks about in derived_from")
    legal = default_table().legal(env["priority"], accessibility.upper(), env["created_at"])
    if deadline is not None and deadline > legal:
        raise MessageError("a requester may ask for a shorter deadline than the legal one, never a longer")
    return {
        "envelope": env, "kind": kind.upper(), "question": question, "subject": subj,
        "criteria": dict(criteria or {}), "reference": reference, "accessibility": accessibility.upper(),
        "urgency_ground": urgency_ground, "deadline": legal if deadline is None else deadline,
        "case_group": case_group,
    }


def case_group_change(group: str, action: str, *, ends_at: int | None = None,
                      members: Iterable[str] = ()) -> dict[str, Any]:
    """The `case_group` of a query that forms (PROPOSE) or changes a case group."""
    action = action.upper()
    if action in ("PROPOSE", "EXTEND") and ends_at is None:
        raise MessageError(f"a {action} names the group's end date")
    return {"group": group.strip().upper(), "action": action, "ends_at": ends_at,
            "members": _agencies(members, "members")}


def reply(env: dict[str, Any], outcome: str, *, refusal_ground: str | None = None,
          reference: str | None = None, data_owner: str | None = None,
          subj: dict[str, Any] | None = None, information: str | None = None,
          location: str | None = None, grading: dict[str, str] | None = None,
          confirmation: dict[str, Any] | None = None) -> dict[str, Any]:
    if env["correlation_id"] is None:
        raise MessageError("a reply names the query or alert it answers (correlation_id)")
    if outcome.upper() == "REFUSED" and refusal_ground is None:
        raise MessageError("a REFUSED reply must name an Article 6 refusal ground")
    return {
        "envelope": env, "outcome": outcome.upper(), "refusal_ground": refusal_ground,
        "reference": reference, "data_owner": data_owner, "subject": subj,
        "information": information, "location": location, "grading": grading,
        "confirmation": confirmation,
    }


def invitation_answer(env: dict[str, Any], *, accept: bool) -> dict[str, Any]:
    """Accept (GRANTED) or decline (REFUSED, no Article 6 ground needed) an invitation to a case group;
    `env` names the inviting query in correlation_id."""
    if env["correlation_id"] is None:
        raise MessageError("an answer names the invitation it answers (correlation_id)")
    return {
        "envelope": env, "outcome": "GRANTED" if accept else "REFUSED", "refusal_ground": None,
        "reference": None, "data_owner": None, "subject": None, "information": None, "location": None,
        "grading": None, "confirmation": None,
    }


def match_confirmation(verified_by: str, *, confirmed: bool = True,
                       note: str | None = None) -> dict[str, Any]:
    """Prum II: a person's verdict on a biometric match, for a reply to the HIT_CHECK."""
    if not verified_by.strip():
        raise MessageError("a match confirmation names the officer who verified it")
    return {"confirmed": confirmed, "verified_by": verified_by.strip(), "note": note}
