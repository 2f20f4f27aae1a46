"""Builders for decoded records, directories and engines in policy tests (plain helpers, no fixtures).

Records look exactly as fastavro decodes them: every field present, uuids as str, times as int ms.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from liaison.directory import Agency, Agreement, Directory, Group
from liaison.policy import MemoryState, PolicyConfig, PolicyEngine, compile_policy

NOW = 1_750_000_000_000
"""A fixed 'now' (June 2025) in epoch ms."""
FAR = NOW + 10 * 365 * 86_400_000
ALL_BIO = frozenset({"BIOMETRIC", "DNA", "FINGERPRINT", "FACIAL_IMAGE"})


def new_id() -> str:
    return str(uuid.uuid4())


def small_directory() -> Directory:
    """A hub, EU agencies (one suspended), two outside the EU, a live and an expired case group."""
    return Directory(
        agencies=[
            Agency("INT-IPSG", "General Secretariat", hub=True, clearances=ALL_BIO),
            Agency("FR-PN", "Police nationale", groups=frozenset({"EU"}), clearances=ALL_BIO),
            Agency("FR-GN", "Gendarmerie nationale", groups=frozenset({"EU"}), clearances=ALL_BIO),
            Agency("DE-BKA", "Bundeskriminalamt", groups=frozenset({"EU"}), clearances=ALL_BIO),
            Agency("IT-PS", "Polizia di Stato", groups=frozenset({"EU"}), status="SUSPENDED"),
            Agency("US-FBI", "Federal Bureau of Investigation", clearances=frozenset({"FINGERPRINT"})),
            Agency("BR-PF", "Policia Federal"),
        ],
        groups=[
            Group("EU", "STANDING"),
            Group("JIT-A", "CASE", members=frozenset({"FR-PN", "DE-BKA", "US-FBI"}), expires_at=FAR),
            Group("JIT-OLD", "CASE", members=frozenset({"FR-PN", "BR-PF"}), expires_at=NOW - 1),
        ],
        agreements=[
            Agreement("PRUM", frozenset({"FR", "DE"}), frozenset(ALL_BIO)),
            Agreement("FR-US", frozenset({"FR-PN", "US-FBI"}), frozenset({"FINGERPRINT"})),
            Agreement("FR-BR-OLD", frozenset({"FR", "BR"}), frozenset(ALL_BIO), expires_at=NOW - 1),
            Agreement("HUB-DEAL", frozenset({"INT-IPSG", "FR", "DE", "US"}), frozenset(ALL_BIO),
                      centre="INT-IPSG"),
        ],
    )


def engine(directory: Directory | None = None, **policy: Any) -> PolicyEngine:
    """An engine over `directory` (default: small_directory) with PolicyConfig fields overridden."""
    return compile_policy(PolicyConfig(**policy), directory or small_directory())


def envelope(originator: str = "FR-PN", *, agencies: Iterable[str] = (), groups: Iterable[str] = (),
             broadcast: bool = False, **fields: Any) -> dict[str, Any]:
    env: dict[str, Any] = {
        "message_id": new_id(), "correlation_id": None, "case_id": "CASE-1", "originator": originator,
        "addressing": {"agencies": list(agencies), "groups": list(groups), "broadcast": broadcast},
        "created_at": NOW - 1000, "expires_at": None, "priority": "NORMAL", "tlp": "AMBER",
        "handling_codes": [], "handling_note": None, "restricted": [], "data_categories": [],
        "purpose": "test", "legal_basis": None, "language": "en", "derived_from": None,
        "redactions": [], "trace_id": None,
    }
    env.update(fields)
    return env


def biometrics(tag: str = "X") -> dict[str, Any]:
    """A full Biometrics record whose values all contain `tag` (so tests can look for leftovers)."""
    return {"fingerprint_ref": f"AFIS-{tag}", "fingerprints": f"FP-{tag}".encode(),
            "dna_profile": f"DNA-{tag}", "facial_image": f"IMG-{tag}".encode()}


def subject(*, with_biometrics: bool = False, tag: str = "X") -> dict[str, Any]:
    return {
        "kind": "PERSON", "summary": "adult male",
        "person": {"family_name": "DOE", "given_names": "John", "date_of_birth": 3650,
                   "nationalities": ["FR"], "sex": "M", "aliases": []},
        "identifiers": [{"scheme": "PASSPORT", "value": "12AB34567", "issuer": "FR"}],
        "biometrics": biometrics(tag) if with_biometrics else None,
    }


def alert(originator: str = "FR-PN", *, kind: str = "DIFFUSION", sensitivity: Iterable[str] = (),
          with_biometrics: bool = False, **env: Any) -> dict[str, Any]:
    return {
        "envelope": envelope(originator, **env), "kind": kind, "colour": "RED", "status": "ISSUED",
        "action": "ARREST", "reference": "REF-1", "subject": subject(with_biometrics=with_biometrics),
        "offence": "fraud", "valid_from": NOW - 1000, "valid_until": None,
        "sensitivity": list(sensitivity), "grading": None, "description": None,
    }


def query(originator: str = "FR-PN", *, kind: str = "INFORMATION", urgency_ground: str | None = None,
          with_biometrics: bool = False, **env: Any) -> dict[str, Any]:
    return {
        "envelope": envelope(originator, **env), "kind": kind, "question": "Who owns this car?",
        "subject": subject(with_biometrics=with_biometrics), "criteria": {}, "reference": None,
        "accessibility": "INDIRECT", "urgency_ground": urgency_ground, "deadline": None,
    }


def reply(originator: str, answers: str, *, outcome: str = "HIT", refusal_ground: str | None = None,
          with_subject: bool = False, information: str | None = None, **env: Any) -> dict[str, Any]:
    env.setdefault("correlation_id", answers)
    return {
        "envelope": envelope(originator, **env), "outcome": outcome, "refusal_ground": refusal_ground,
        "reference": "HIT-REF-1", "data_owner": None,
        "subject": subject() if with_subject else None, "information": information,
        "location": None, "grading": None,
    }


def routed(state: MemoryState, originator: str, delivered_to: Iterable[str], *, handling: Iterable[str] = (),
           query_kind: str | None = None, derived_from: str | None = None) -> str:
    """Put a routed message into `state`; its id."""
    message_id = new_id()
    state.add_message(message_id, originator, handling=handling, delivered_to=delivered_to,
                      query_kind=query_kind, derived_from=derived_from)
    return message_id


def outcomes(result: Any) -> dict[str, str]:
    """recipient -> outcome of a RoutingResult."""
    return {d.recipient: d.outcome for d in result.decisions}


def codes(result: Any) -> dict[str, str | None]:
    """recipient -> reason code of a RoutingResult."""
    return {d.recipient: d.reason_code for d in result.decisions}
