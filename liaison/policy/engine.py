"""The sharing policy compiled over one directory snapshot, evaluated per (message, recipient).

`route` is the router's hot path: message-level checks once, addressing expanded from precomputed
sets, then each recipient through the ordered rule list of its message type. `explain` runs the
very same code with a trace of every rule consulted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from liaison.directory import BIOMETRIC_CATEGORIES, Agency, Directory, country_of
from liaison.policy import reasons as R  # short alias: the engine cites many codes
from liaison.policy.model import (
    Check,
    Decision,
    Explanation,
    PolicyConfig,
    RecipientExplanation,
    Rejection,
    RoutingResult,
    RoutingState,
)
from liaison.policy.redaction import categories_in
from liaison.policy.rules import BROADCAST, GROUP, NAMED, Message, Rule, Target, Verdict, rule_lists

TLP_LABELS = frozenset({"RED", "AMBER_STRICT", "AMBER", "GREEN", "CLEAR"})
NEUTRALITY_TAGS = frozenset({"POLITICAL", "MILITARY", "RELIGIOUS", "RACIAL"})
HIT_CHECK_CONTENT = ("subject", "information", "location")
ALLOWED_OUTCOMES: dict[str | None, frozenset[str]] = {
    None: frozenset({"HIT", "NO_HIT", "PARTIAL", "REFUSED", "FLAG"}),  # an alert
    "HIT_CHECK": frozenset({"HIT", "NO_HIT"}),
    "CONSENT": frozenset({"GRANTED", "REFUSED"}),
    "INFORMATION": frozenset({"HIT", "NO_HIT", "PARTIAL", "REFUSED"}),
    "DATA_REQUEST": frozenset({"HIT", "NO_HIT", "PARTIAL", "REFUSED"}),
}
"""Reply outcomes allowed per kind of answered message (None: an alert)."""

_NO_ONE: frozenset[str] = frozenset()
FOREVER = 2**63 - 1


class _Reject(Exception):  # control flow inside _prepare, never escapes the engine
    def __init__(self, rejection: Rejection) -> None:
        self.rejection = rejection


class Compiled:
    """The directory and the policy in the shapes evaluation wants: dicts, sets, sorted tuples."""

    def __init__(self, config: PolicyConfig, directory: Directory) -> None:
        self.config = config
        self.directory = directory
        self.agencies: Mapping[str, Agency] = directory.agencies
        self.active = directory.active_agencies()
        self.hubs = frozenset(directory.hub_agencies()) | config.hubs
        self.active_hubs = tuple(sorted(h for h in self.hubs
                                        if h in self.agencies and self.agencies[h].active))
        reach = {"named": NAMED, "groups": GROUP}
        self.tlp_limits: dict[str, tuple[int, str, str]] = {
            "RED": (NAMED, R.TLP_RED_NOT_NAMED, R.TLP_RED_NOT_NAMED),
            "AMBER_STRICT": (reach[config.amber_strict_reach], R.TLP_AMBER_BROADCAST, R.TLP_AMBER_NOT_NAMED),
            "AMBER": (reach[config.amber_reach], R.TLP_AMBER_BROADCAST, R.TLP_AMBER_NOT_NAMED),
            "GREEN": (GROUP, R.TLP_GREEN_BROADCAST, R.TLP_GREEN_BROADCAST),
        }
        self._coverage: dict[tuple[str, str], dict[str, int]] = {}

    def coverage(self, a: str, b: str) -> dict[str, int]:
        """Category -> until when (ms) an agreement between a and b covers it; cached per pair."""
        found = self._coverage.get((a, b))
        if found is None:
            found = {}
            for ag in self.directory.agreements_between(a, b):
                until = FOREVER if ag.expires_at is None else ag.expires_at
                for cat in ag.categories:
                    found[cat] = max(found.get(cat, 0), until)
            self._coverage[(a, b)] = found
        return found


class PolicyEngine:
    """Decides, for one message, what each recipient gets; pure and deterministic."""

    def __init__(self, config: PolicyConfig, directory: Directory) -> None:
        self.config = config
        self.directory = directory
        self._c = Compiled(config, directory)
        self._rules = rule_lists(self._c)

    def rule_names(self, message_type: str) -> tuple[str, ...]:
        """The per-recipient rules of a message type, in evaluation order."""
        return tuple(rule.name for rule in self._rules.get(message_type, ()))

    def route(self, message_type: str, record: dict[str, Any], *, outbox_owner: str, now_ms: int,
              state: RoutingState) -> RoutingResult:
        """Every recipient's decision, or the whole message's rejection."""
        return self._evaluate(message_type, record, owner=outbox_owner, now=now_ms, state=state,
                              trace=None)[0]

    def explain(self, message_type: str, record: dict[str, Any], *, outbox_owner: str | None = None,
                now_ms: int, state: RoutingState) -> Explanation:
        """The same evaluation as `route`, with every rule consulted and its verdict."""
        owner = outbox_owner
        if owner is None:
            env = record.get("envelope")
            owner = str(env.get("originator")) if isinstance(env, Mapping) else ""
        trace: list[Any] = []
        result, details = self._evaluate(message_type, record, owner=owner, now=now_ms, state=state,
                                         trace=trace)
        return Explanation(message_type, tuple(trace), tuple(details), result)

    # -- evaluation -----------------------------------------------------------------------------
    def _evaluate(self, message_type: str, record: dict[str, Any], *, owner: str, now: int,
                  state: RoutingState, trace: list[Any] | None
                  ) -> tuple[RoutingResult, list[RecipientExplanation]]:
        started = self._start(message_type, record, owner=owner, now=now, state=state, trace=trace)
        if isinstance(started, Rejection):
            if trace is not None:
                trace.append(Check(started.rule, "REJECT", started.code, started.reason))
            return RoutingResult((), started), []
        m, targets, notes = started
        rules = self._rules[message_type]
        decisions: list[Decision] = list(notes)
        details = [RecipientExplanation(d.recipient, "addressing",
                                        (Check(d.rule, "DENY", d.reason_code, d.reason),), d)
                   for d in notes] if trace is not None else []
        if trace is None:
            rules = tuple(rule for rule in rules if rule.applies(m))
        reviewed = False
        for code in sorted(targets):
            t = targets[code]
            if trace is None:
                d = self._decide(m, t, rules)
            else:
                checks: list[Check] = []
                d = self._decide_traced(m, t, rules, checks)
                details.append(RecipientExplanation(code, t.via, tuple(checks), d))
            decisions.append(d)
            reviewed = reviewed or d.outcome == "HOLD" or (t.review and d.outcome == "DELIVER")
        decisions.sort(key=lambda d: d.recipient)
        details.sort(key=lambda e: e.recipient)
        notify: tuple[str, ...] = ()
        if reviewed or (m.notify_on_delivery and any(d.outcome == "DELIVER" for d in decisions)):
            notify = self._hubs_to_tell(m)
        return RoutingResult(tuple(decisions), None, notify), details

    def _hubs_to_tell(self, m: Message) -> tuple[str, ...]:
        """Active hubs other than the sender (and a reply's asker) that the originator did not restrict."""
        restricted = m.restricted
        return tuple(h for h in self._c.active_hubs
                     if h not in (m.originator, m.asker) and h not in restricted
                     and country_of(h) not in restricted)

    def _start(self, message_type: str, record: dict[str, Any], *, owner: str, now: int,
               state: RoutingState, trace: list[Any] | None
               ) -> tuple[Message, dict[str, Target], list[Decision]] | Rejection:
        """The message-level checks and the expanded recipients, or why the whole message is refused."""
        if message_type not in self._rules:
            return Rejection(R.UNKNOWN_TYPE, f"{message_type} records may not be sent to an outbox (only "
                             "Alert, Query and Reply).", "message-type")
        try:
            m = self._prepare(message_type, record, owner=owner, now=now, state=state, trace=trace)
            targets, notes = self._expand(m, record["envelope"].get("addressing") or {})
        except _Reject as exc:
            return exc.rejection
        except (KeyError, TypeError, AttributeError) as exc:
            return Rejection(R.INVALID, f"The record lacks or mistypes a field routing needs ({exc!r}).",
                             "well-formed")
        return m, targets, notes

    @staticmethod
    def _decide(m: Message, t: Target, rules: tuple[Rule, ...]) -> Decision:
        """The hot path: the first DENY or HOLD decides; DELIVER notes accumulate."""
        note: Verdict | None = None
        for rule in rules:
            v = rule.check(m, t)
            if v is None:
                continue
            if v.outcome != "DELIVER":
                return Decision(t.code, v.outcome, v.code, v.reason, rule.name)
            if note is not None:  # a second note (a redacted review copy): keep both
                v = Verdict("DELIVER", v.code, f"{note.reason} {v.reason}", note.redactions + v.redactions)
            note, last = v, rule.name
        if note is None:
            return Decision(t.code, "DELIVER", None, None, "default")
        return Decision(t.code, "DELIVER", note.code, note.reason, last, note.redactions)

    @classmethod
    def _decide_traced(cls, m: Message, t: Target, rules: tuple[Rule, ...], checks: list[Check]) -> Decision:
        """`_decide` over every rule up to the deciding one, recording each verdict."""
        consulted: list[Rule] = []
        for rule in rules:
            consulted.append(rule)
            v = rule.check(m, t)
            checks.append(Check(rule.name, "PASS") if v is None
                          else Check(rule.name, v.outcome, v.code, v.reason, v.redactions))
            if v is not None and v.outcome != "DELIVER":
                break
        return cls._decide(m, t, tuple(consulted))

    # -- message-level checks -------------------------------------------------------------------
    def _prepare(self, mtype: str, record: dict[str, Any], *, owner: str, now: int, state: RoutingState,
                 trace: list[Any] | None) -> Message:
        env = record["envelope"]
        originator = env["originator"]

        def require(rule: str, ok: bool, code: str, reason: str, *args: object) -> None:
            """Reject with `reason.format(*args)` unless ok (formatted only when it fails)."""
            if not ok:
                raise _Reject(Rejection(code, reason.format(*args), rule))
            if trace is not None:
                trace.append(Check(rule, "PASS"))

        require("originator-owns-outbox", originator == owner, R.SPOOFED_ORIGINATOR,
                "The envelope names {} as originator but was written to {}'s outbox.", originator, owner)
        sender = self._c.agencies.get(originator)
        require("originator-known", sender is not None, R.UNKNOWN_ORIGINATOR,
                "{} is not an agency in the directory.", originator)
        require("originator-active", sender is not None and sender.active, R.ORIGINATOR_SUSPENDED,
                "{} is suspended from the bus.", originator)
        m = Message(mtype, record, originator, now)
        if mtype == "Reply":
            self._prepare_reply(m, record, env, state, require)
        elif mtype == "Query":
            urgent = env.get("priority") == "URGENT"
            require("urgent-has-ground", not urgent or bool(record.get("urgency_ground")),
                    R.URGENT_WITHOUT_GROUND, "An URGENT query must name its urgency_ground.")
            require("consent-names-source", record["kind"] != "CONSENT" or bool(env.get("derived_from")),
                    R.CONSENT_WITHOUT_SOURCE,
                    "A CONSENT query must name the message to pass on in derived_from.")
        else:
            config = self._c.config
            if config.neutrality_review and NEUTRALITY_TAGS.intersection(record.get("sensitivity") or ()):
                m.hold = R.NEUTRALITY_REVIEW
            elif config.notice_review and record["kind"] == "NOTICE" and originator not in self._c.hubs:
                m.hold = R.NOTICE_REVIEW
        tlp = env.get("tlp") or "AMBER"
        m.tlp = tlp if tlp in TLP_LABELS else "RED"  # an unknown label gets the strictest reading
        restricted = env.get("restricted")
        if restricted:
            m.restricted = frozenset(str(r).upper() for r in restricted)
        expires = env.get("expires_at")
        m.expired = expires is not None and expires <= now
        declared = env.get("data_categories")
        protected = BIOMETRIC_CATEGORIES.intersection(declared) if declared else _NO_ONE
        m.protected = protected | categories_in(record) if record.get("subject") else protected
        derived = env.get("derived_from")
        if derived:
            handling = state.handling_of(derived)
            if handling is None:
                m.derived_unknown = True
            else:
                provider, codes = handling
                if "H2" in codes and provider != originator and not state.has_consent(derived, originator):
                    m.h2_provider = provider
        return m

    @staticmethod
    def _prepare_reply(m: Message, record: dict[str, Any], env: Mapping[str, Any], state: RoutingState,
                       require: Callable[..., None]) -> None:
        asked: str = env.get("correlation_id") or ""
        require("reply-has-correlation", bool(asked), R.REPLY_WITHOUT_CORRELATION,
                "A reply must name the message it answers in correlation_id.")
        m.asker = state.originator_of(asked)
        require("correlation-known", m.asker is not None, R.UNKNOWN_CORRELATION,
                "The answered message {} was never routed by the bus.", asked)
        outcome = record["outcome"]
        require("refusal-has-ground", outcome != "REFUSED" or bool(record.get("refusal_ground")),
                R.REFUSAL_WITHOUT_GROUND, "A REFUSED reply must name its refusal_ground.")
        kind = state.query_kind_of(asked)
        allowed = ALLOWED_OUTCOMES.get(kind, ALLOWED_OUTCOMES["INFORMATION"])
        require("outcome-fits-question", outcome in allowed, R.OUTCOME_NOT_ALLOWED,
                "{} does not answer {} (allowed: {}).", outcome,
                "an alert" if kind is None else f"a {kind} query", ", ".join(sorted(allowed)))
        delivered = state.delivered_to(asked)
        m.replier_ok = delivered is not None and m.originator in delivered
        m.hit_check_content = kind == "HIT_CHECK" and any(record.get(f) for f in HIT_CHECK_CONTENT)
        m.notify_on_delivery = kind is None and outcome in ("HIT", "FLAG")

    # -- addressing -----------------------------------------------------------------------------
    def _expand(self, m: Message, addressing: Mapping[str, Any]) -> tuple[dict[str, Target], list[Decision]]:
        """Recipients by code (the sender left out), and decisions about addressed groups."""
        agencies = self._c.agencies
        sender = m.originator
        targets: dict[str, Target] = {}
        notes: list[Decision] = []
        for code in addressing.get("agencies") or ():
            if code != sender:
                targets[code] = Target(code, agencies.get(code), NAMED, "named")
        for name in sorted(set(addressing.get("groups") or ())):  # sorted: `via` names the first group
            group = self.directory.group(name)
            if group is None or group.expired(m.now):
                code = R.UNKNOWN_RECIPIENT if group is None else R.GROUP_EXPIRED
                why = (f"{name} is not a group in the directory." if group is None
                       else f"The case group {name} has expired and reaches nobody.")
                notes.append(Decision(f"group:{name}", "DENY", code, why, "group-valid"))
                continue
            via = f"group {name}"
            for code in sorted(self.directory.members_of(name, m.now)):
                if code != sender and code not in targets:
                    targets[code] = Target(code, agencies.get(code), GROUP, via)
        if addressing.get("broadcast"):
            for code in self._c.active:
                if code not in targets and code != sender:
                    targets[code] = Target(code, agencies[code], BROADCAST, "broadcast")
        self._add_implicit(m, targets)
        return targets, notes

    def _add_implicit(self, m: Message, targets: dict[str, Target]) -> None:
        """Recipients the addressing does not name: the hubs reviewing a held alert, a reply's asker."""
        agencies = self._c.agencies
        if m.hold is not None:
            for hub in self._c.active_hubs:
                if hub != m.originator:
                    targets[hub] = Target(hub, agencies[hub], NAMED, "review", review=True)
        if m.asker is not None and m.asker != m.originator:
            targets[m.asker] = Target(m.asker, agencies.get(m.asker), NAMED, "asker")


def compile_policy(policy_cfg: PolicyConfig | Mapping[str, Any], directory: Directory) -> PolicyEngine:
    """Compile a policy (a PolicyConfig or the parsed policy file) over a directory snapshot."""
    config = policy_cfg if isinstance(policy_cfg, PolicyConfig) else PolicyConfig.from_mapping(policy_cfg)
    return PolicyEngine(config, directory)

