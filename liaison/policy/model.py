"""What the policy engine takes and gives: its settings, its decisions, and the state it reads."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

import yaml

from liaison.core.files import read_config
from liaison.directory import check_agency_code
from liaison.errors import ConfigError
from liaison.policy.reasons import FIELDS_REMOVED, PUBLIC, REASONS

if TYPE_CHECKING:
    from liaison.case_groups import CaseGroup
    from liaison.directory import Directory
    from liaison.policy.engine import PolicyEngine

Outcome = Literal["DELIVER", "DENY", "HOLD"]
Verdict = Literal["PASS", "DELIVER", "DENY", "HOLD", "REJECT"]
Reach = Literal["named", "groups"]


# -- results --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Decision:
    """What happens to one message for one recipient.

    `reason_code` and `reason` are the detail, for the audit trail; `public_code` and
    `public_reason` are what the sender's receipt may show (see reasons.PUBLIC).
    """

    recipient: str  # an agency code; `group:<NAME>` for a decision about an addressed group
    outcome: Outcome
    reason_code: str | None  # None for a plain DELIVER
    reason: str | None
    rule: str  # the deciding rule's name, for `liaison policy explain`
    redactions: tuple[str, ...] = ()  # field paths removed before delivery, e.g. subject.biometrics
    concealed_via: str | None = None
    """The group through which alone this recipient was reached, when the sender is neither a member
    of it nor a hub: the sender gets no receipt naming this recipient, only the group's one receipt
    (RoutingResult.concealed)."""
    copy: tuple[str, str] | None = None
    """(CopyKind, addressee) when the delivery is a copy the law requires (a SPOC's), not the
    message as addressed: the router marks envelope.copy with it."""

    @property
    def public_code(self) -> str | None:
        """The reason code the sender's receipt shows."""
        if self.redactions:
            return FIELDS_REMOVED
        code = self.reason_code
        return code if code is None else PUBLIC.get(code, code)

    @property
    def public_reason(self) -> str | None:
        """The reason the sender's receipt shows: general words wherever the detail is not its own."""
        if self.redactions or self.reason_code in PUBLIC:
            return REASONS[self.public_code or ""]
        return self.reason


@dataclass(frozen=True, slots=True)
class Rejection:
    """A problem with the whole message: it goes to the dead-letter topic and nobody receives it."""

    code: str
    reason: str
    rule: str = ""

    @property
    def public_code(self) -> str:
        """The code the sender's REJECTED receipt shows (the dead letter keeps `code`)."""
        return PUBLIC.get(self.code, self.code)

    @property
    def public_reason(self) -> str:
        """The reason the sender's REJECTED receipt shows (the dead letter keeps `reason`)."""
        return REASONS[self.public_code] if self.code in PUBLIC else self.reason


@dataclass(frozen=True, slots=True)
class RoutingResult:
    """Every decision about one message."""

    decisions: tuple[Decision, ...]  # one per expanded recipient, denied ones included, sorted
    rejection: Rejection | None = None
    notify_hub: tuple[str, ...] = ()  # hubs to tell: held alerts, FLAG and HIT replies to alerts
    concealed: tuple[Decision, ...] = ()
    """One decision per addressed group whose members the sender may not learn (recipient
    `group:<NAME>`, sorted): the sender's receipt in place of those of the decisions with that
    `concealed_via`. It depends on the message alone, never on who is in the group."""
    waived: tuple[Decision, ...] = ()
    """Copies the law requires that the sender waived on a stated ground (audit only)."""

    @property
    def delivered(self) -> tuple[str, ...]:
        return tuple(d.recipient for d in self.decisions if d.outcome == "DELIVER")

    @property
    def sender_view(self) -> tuple[Decision, ...]:
        """The decisions the sender gets a receipt for (use their public_code / public_reason)."""
        return (*(d for d in self.decisions if d.concealed_via is None), *self.concealed)


@dataclass(frozen=True, slots=True)
class Check:
    """One rule's verdict on one message or recipient, as `liaison policy explain` shows it."""

    rule: str
    verdict: Verdict
    reason_code: str | None = None
    reason: str | None = None
    redactions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RecipientExplanation:
    """How one recipient was reached, every rule consulted for it, and the decision."""

    recipient: str
    via: str  # named, group:<NAME>, broadcast, review, asker, addressing
    checks: tuple[Check, ...]
    decision: Decision


@dataclass(frozen=True, slots=True)
class Explanation:
    """The full reasoning behind a RoutingResult."""

    message_type: str
    message_checks: tuple[Check, ...]
    recipients: tuple[RecipientExplanation, ...]
    result: RoutingResult

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form, for `liaison policy explain --json`."""
        def check(c: Check) -> dict[str, Any]:
            return {"rule": c.rule, "verdict": c.verdict, "reason_code": c.reason_code, "reason": c.reason,
                    "redactions": list(c.redactions)}
        rejection = self.result.rejection
        return {
            "message_type": self.message_type,
            "message_checks": [check(c) for c in self.message_checks],
            "rejection": None if rejection is None else {"code": rejection.code, "reason": rejection.reason},
            "recipients": [{"recipient": r.recipient, "via": r.via, "outcome": r.decision.outcome,
                            "reason_code": r.decision.reason_code, "rule": r.decision.rule,
                            "redactions": list(r.decision.redactions),
                            "public_code": r.decision.public_code,
                            "concealed_via": r.decision.concealed_via,
                            "checks": [check(c) for c in r.checks]} for r in self.recipients],
            "concealed": [{"recipient": d.recipient, "outcome": d.outcome, "reason_code": d.reason_code,
                           "reason": d.reason} for d in self.result.concealed],
            "notify_hub": list(self.result.notify_hub),
            "waived": [{"recipient": d.recipient, "reason_code": d.reason_code, "reason": d.reason}
                       for d in self.result.waived],
        }


# -- state ----------------------------------------------------------------------------------------
class RoutingState(Protocol):
    """What the router remembers from compacted topics; the engine only reads it."""

    def delivered_to(self, message_id: str) -> frozenset[str] | None: ...
    def originator_of(self, message_id: str) -> str | None: ...
    def handling_of(self, message_id: str) -> tuple[str, frozenset[str]] | None: ...
    def has_consent(self, message_id: str, requester: str) -> bool: ...
    def query_kind_of(self, message_id: str) -> str | None: ...
    def routed_at(self, message_id: str) -> int | None: ...
    def invitation_of(self, message_id: str) -> str | None: ...
    def case_group(self, name: str) -> CaseGroup | None: ...
    def groups_run_by(self, agency: str) -> int: ...
    def match(self, replier: str, reference: str) -> Mapping[str, Any] | None: ...


@dataclass
class MemoryState:
    """A RoutingState in dicts, for tests and `liaison policy explain`."""

    originators: dict[str, str] = field(default_factory=dict)
    handling: dict[str, frozenset[str]] = field(default_factory=dict)
    delivered: dict[str, frozenset[str]] = field(default_factory=dict)
    query_kinds: dict[str, str] = field(default_factory=dict)
    derived: dict[str, str] = field(default_factory=dict)
    consents: set[tuple[str, str]] = field(default_factory=set)
    routed_times: dict[str, int] = field(default_factory=dict)
    invitations: dict[str, str] = field(default_factory=dict)  # query id -> case group it invites to
    case_groups: dict[str, CaseGroup] = field(default_factory=dict)
    matches: dict[str, dict[str, Any]] = field(default_factory=dict)  # match_key -> state

    def add_message(self, message_id: str, originator: str, *, handling: Iterable[str] = (),
                    delivered_to: Iterable[str] = (), query_kind: str | None = None,
                    derived_from: str | None = None, routed_at: int | None = None) -> None:
        """Remember a routed message."""
        if routed_at is not None:
            self.routed_times[message_id] = routed_at
        self.originators[message_id] = originator
        self.handling[message_id] = frozenset(handling)
        self.delivered[message_id] = frozenset(delivered_to)
        if query_kind is not None:
            self.query_kinds[message_id] = query_kind
        if derived_from is not None:
            self.derived[message_id] = derived_from

    def add_consent(self, message_id: str, requester: str) -> None:
        """The provider of `message_id` lets `requester` pass it on."""
        self.consents.add((message_id, requester))

    def observe(self, message_type: str, record: Mapping[str, Any], result: RoutingResult) -> None:
        """Remember a routed message as the router would, consents given by GRANTED replies included."""
        if result.rejection is not None:
            return
        env = record["envelope"]
        self.add_message(env["message_id"], env["originator"], handling=env.get("handling_codes") or (),
                         delivered_to=result.delivered,
                         query_kind=record.get("kind") if message_type == "Query" else None,
                         derived_from=env.get("derived_from"))
        asked = env.get("correlation_id")
        if (message_type == "Reply" and record.get("outcome") == "GRANTED" and result.delivered
                and asked is not None and self.query_kinds.get(asked) == "CONSENT"
                and asked in self.derived):
            self.add_consent(self.derived[asked], self.originators[asked])

    # -- RoutingState ---------------------------------------------------------------------------
    def delivered_to(self, message_id: str) -> frozenset[str] | None:
        return self.delivered.get(message_id)

    def originator_of(self, message_id: str) -> str | None:
        return self.originators.get(message_id)

    def handling_of(self, message_id: str) -> tuple[str, frozenset[str]] | None:
        originator = self.originators.get(message_id)
        return None if originator is None else (originator, self.handling.get(message_id, frozenset()))

    def has_consent(self, message_id: str, requester: str) -> bool:
        return (message_id, requester) in self.consents

    def query_kind_of(self, message_id: str) -> str | None:
        return self.query_kinds.get(message_id)

    def routed_at(self, message_id: str) -> int | None:
        return self.routed_times.get(message_id)

    def invitation_of(self, message_id: str) -> str | None:
        return self.invitations.get(message_id)

    def case_group(self, name: str) -> CaseGroup | None:
        return self.case_groups.get(name)

    def groups_run_by(self, agency: str) -> int:
        return sum(1 for g in self.case_groups.values() if g.initiator == agency and g.status == "ACTIVE")

    def match(self, replier: str, reference: str) -> Mapping[str, Any] | None:
        return self.matches.get(match_key(replier, reference))


def match_key(replier: str, reference: str) -> str:
    """Where a biometric HIT's confirmation state is kept (in `bus.consents`): the replier's own
    reference, so that no other agency's HIT can stand in for it."""
    return f"match/{replier}/{reference}"


# -- settings -------------------------------------------------------------------------------------
REMEMBER_DAYS: Mapping[str, int] = {"Alert": 3650, "Query": 400, "Reply": 400}
"""How long the bus remembers a routed message of each type by default (a notice lives for years)."""

@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """The choices DOMAIN.md leaves open, as `deploy/policy.yaml` makes them."""

    hubs: frozenset[str] = frozenset()  # hubs besides the directory's hub flags
    notice_review: bool = True  # NOTICE from a non-hub is held until a hub reviews it
    neutrality_review: bool = True  # alerts with a sensitivity tag are held (Article 3)
    amber_strict_reach: Reach = "groups"  # named: only agencies named directly
    amber_reach: Reach = "groups"
    biometrics: Literal["redact", "deny"] = "redact"  # without clearance and agreement
    unknown_source: Literal["allow", "deny"] = "allow"  # derived_from names a message never routed
    audit_retention_days: int | None = None  # None: keep the audit trail forever
    remember_days: Mapping[str, int] = field(default_factory=lambda: dict(REMEMBER_DAYS))

    @property
    def audit_retention_ms(self) -> int:
        """For the audit topic's retention.ms (-1: forever)."""
        return -1 if self.audit_retention_days is None else self.audit_retention_days * 86_400_000

    def expires_ms(self, message_type: str, routed_at: int, deadline: int | None = None) -> int:
        """When the bus forgets a routed message (its state entry expires): `remember_days` after it
        was routed, or after its deadline for a query, which may be answered late."""
        days = self.remember_days.get(message_type, max(REMEMBER_DAYS.values()))
        return max(routed_at, deadline or 0) + days * 86_400_000

    def compile(self, directory: Directory) -> PolicyEngine:
        """The engine for this policy over one directory snapshot."""
        from liaison.policy.engine import PolicyEngine  # noqa: PLC0415  # the engine imports this module

        return PolicyEngine(self, directory)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None, *, source: str = "policy") -> PolicyConfig:
        """Check a parsed policy file; errors name `source` and the bad setting."""
        try:
            return cls._parse(raw or {})
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    @classmethod
    def _parse(cls, raw: Mapping[str, Any]) -> PolicyConfig:
        top = _section(raw, "top level", {"version", "hubs", "review", "tlp", "biometrics", "onward_sharing",
                                          "audit", "state"})
        if top.get("version", 1) != 1:
            raise ConfigError(f"version {top['version']!r} is not supported (1)")
        hubs = top.get("hubs") or []
        if not isinstance(hubs, list):
            raise ConfigError("hubs must be a list of agency codes")
        review = _section(top.get("review"), "review", {"notices", "neutrality"})
        tlp = _section(top.get("tlp"), "tlp", {"amber_strict", "amber"})
        bio = _section(top.get("biometrics"), "biometrics", {"on_missing"})
        onward = _section(top.get("onward_sharing"), "onward_sharing", {"unknown_source"})
        days = _section(top.get("audit"), "audit", {"retention_days"}).get("retention_days")
        if days is not None and (not isinstance(days, int) or isinstance(days, bool) or days < 1):
            raise ConfigError("audit.retention_days must be a positive number of days or null")
        remember = _section(_section(top.get("state"), "state", {"remember_days"}).get("remember_days"),
                            "state.remember_days", set(REMEMBER_DAYS))
        for kind, value in remember.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"state.remember_days.{kind} must be a positive number of days")
        return cls(
            remember_days={**REMEMBER_DAYS, **remember},
            hubs=frozenset(check_agency_code(h, "hubs") for h in hubs),
            notice_review=_choice(review, "notices", (True, False), True, "review"),
            neutrality_review=_choice(review, "neutrality", (True, False), True, "review"),
            amber_strict_reach=_choice(tlp, "amber_strict", ("named", "groups"), "groups", "tlp"),
            amber_reach=_choice(tlp, "amber", ("named", "groups"), "groups", "tlp"),
            biometrics=_choice(bio, "on_missing", ("redact", "deny"), "redact", "biometrics"),
            unknown_source=_choice(onward, "unknown_source", ("allow", "deny"), "allow", "onward_sharing"),
            audit_retention_days=days,
        )

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "policy") -> PolicyConfig:
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: not valid YAML: {exc}") from None
        if raw is not None and not isinstance(raw, Mapping):
            raise ConfigError(f"{source}: must be a mapping of settings")
        return cls.from_mapping(raw, source=source)


def load_policy(path: str | Path) -> PolicyConfig:
    """Read and check a policy file (`deploy/policy.yaml`)."""
    return PolicyConfig.from_yaml(read_config(path, "policy"), source=str(path))


def _section(raw: object, where: str, allowed: set[str]) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a mapping")
    extra = sorted(map(str, set(raw) - allowed))
    if extra:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(extra)} "
                          f"(allowed: {', '.join(sorted(allowed))})")
    return raw


def _choice(raw: Mapping[str, Any], key: str, choices: tuple[Any, ...], default: Any, where: str) -> Any:
    value = raw.get(key, default)
    if value is None:
        return default
    if value not in choices or type(value) is not type(choices[0]):
        shown = " or ".join(str(c).lower() if isinstance(c, bool) else str(c) for c in choices)
        raise ConfigError(f"{where}.{key} must be {shown}, not {value!r}")
    return cast(Any, value)
