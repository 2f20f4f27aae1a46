"""The sharing policy compiled over one directory snapshot, evaluated per (message, recipient).

`route` is the router's hot path: message-level checks once, addressing expanded from precomputed
sets, then each recipient through the ordered rule list of its message type. `explain` runs the
very same code with a trace of every rule consulted.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from liaison.case_groups import INVITING, CaseGroup, check_change
from liaison.directory import BIOMETRIC_CATEGORIES, Agency, Directory, Officer, country_of
from liaison.policy import reasons as R  # short alias: the engine cites many codes
from liaison.policy.model import (
    Check,
    Decision,
    Explanation,
    Outcome,
    PolicyConfig,
    RecipientExplanation,
    Rejection,
    RoutingResult,
    RoutingState,
)
from liaison.policy.redaction import BIOMETRICS, locate
from liaison.policy.rules import BROADCAST, GROUP, NAMED, Message, Rule, Target, Verdict, rule_lists

TLP_LABELS = frozenset({"RED", "AMBER_STRICT", "AMBER", "GREEN", "CLEAR"})
NEUTRALITY_TAGS = frozenset({"POLITICAL", "MILITARY", "RELIGIOUS", "RACIAL"})
HIT_CHECK_CONTENT = ("subject", "information", "location")
INVITATION_OUTCOMES = frozenset({"GRANTED", "REFUSED"})
"""An invitation to a case group is accepted (GRANTED) or declined (REFUSED, no ground needed)."""
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
        self.notice_closed = frozenset({"RED", "AMBER_STRICT"} | ({"AMBER"} if config.amber_reach == "named"
                                                                 else set()))
        """TLP labels under which a notice reaches no agency that did not receive the message."""
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
        m, targets, notes, hidden = started
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
            reviewed = reviewed or (m.hold is not None and d.outcome == "HOLD") or (
                t.review and d.outcome == "DELIVER")
        decisions.sort(key=lambda d: d.recipient)
        details.sort(key=lambda e: e.recipient)
        notify: tuple[str, ...] = ()
        if reviewed or (m.notify_on_delivery and any(d.outcome == "DELIVER" for d in decisions)):
            notify = self._hubs_to_tell(m, decisions)
        concealed = self._group_receipts(m, hidden) if hidden else ()
        return RoutingResult(tuple(decisions), None, notify, concealed, tuple(m.waived)), details

    def _hubs_to_tell(self, m: Message, decisions: list[Decision]) -> tuple[str, ...]:
        """Active hubs other than the sender (and a reply's asker) that a notice about `m` may reach."""
        received = {d.recipient for d in decisions if d.outcome == "DELIVER"}
        return tuple(h for h in self._c.active_hubs
                     if h not in (m.originator, m.asker)
                     and self._notice(h, m.restricted, m.tlp, received) is None)

    def _group_receipts(self, m: Message, groups: list[str]) -> tuple[Decision, ...]:
        """The sender's one receipt per concealed group: from the message's own terms only.

        The members' own decisions also depend on who they are (suspended, restricted, cleared);
        a receipt built from them would let a sender probe the membership (e.g. with `restricted`).
        """
        limit = self._c.tlp_limits.get(m.tlp)
        outcome: Outcome = "DENY"
        if m.type == "Reply":
            code = R.REPLY_NOT_TO_ASKER
        elif m.expired:
            code = R.EXPIRED
        elif limit is not None and limit[0] < GROUP:
            code = limit[2]
        elif m.h2_provider is not None:
            code = R.NO_CONSENT_FOR_H2
        elif m.derived_unknown and self._c.config.unknown_source == "deny":
            code = R.UNKNOWN_SOURCE
        elif m.hold is not None:
            outcome, code = "HOLD", m.hold
        else:
            outcome, code = "DELIVER", R.GROUP_ROUTED
        return tuple(Decision(f"group:{name}", outcome, code, R.REASONS[code], "group-receipt")
                     for name in groups)

    # -- notices --------------------------------------------------------------------------------
    def notice_allowed(self, recipient: str, *, restricted: Iterable[str] = (), tlp: str | None = None,
                       received: Collection[str] = ()) -> bool:
        """Whether a notice about a message (hit notification, hub notice) may go to `recipient`.

        Call it once per message the notice is about (a HIT_NOTIFICATION: the asker's query and the
        reply) with that message's `envelope.restricted` and `envelope.tlp`; send only if every call
        allows. See `notice_decision` for the rules.
        """
        return self._notice(recipient, _upper(restricted), _label(tlp), received) is None

    def notice_decision(self, recipient: str, *, restricted: Iterable[str] = (), tlp: str | None = None,
                        received: Collection[str] = ()) -> Decision:
        """The audit's view of `notice_allowed`: DELIVER, or DENY with the code and reason.

        A notice tells its recipient that the message exists, who sent or answered it and, for a
        hit, who searched: it honours the message's terms as a copy of the message would.
        Refused: an agency unknown to the directory (UNKNOWN_RECIPIENT) or not active
        (RECIPIENT_SUSPENDED); one the message restricts, by code or by country
        (RESTRICTED_BY_ORIGINATOR); one the TLP label keeps out (NOTICE_BEYOND_TLP). TLP 2.0, for
        an agency that did not receive the message itself (`received`: the agencies it was
        delivered to, which a notice tells nothing new):
        RED - named recipients only: never; AMBER+STRICT - the recipient's organisation only:
        never; AMBER - those the recipient must inform, need-to-know (the owner of a record that
        hit, the hub that reviews): allowed, unless the policy keeps AMBER to named agencies
        (`tlp.amber: named`); GREEN - the community: allowed; CLEAR: allowed. A missing label reads
        as AMBER and an unknown one as RED, as in routing.
        """
        refused = self._notice(recipient, _upper(restricted), _label(tlp), received)
        if refused is None:
            return Decision(recipient, "DELIVER", None, None, "notice-terms")
        return Decision(recipient, "DENY", refused[0], refused[1], "notice-terms")

    def _notice(self, code: str, restricted: frozenset[str], tlp: str,
                received: Collection[str]) -> tuple[str, str] | None:
        """Why a notice may not reach `code` (code, reason), or None."""
        agency = self._c.agencies.get(code)
        if agency is None:
            return R.UNKNOWN_RECIPIENT, f"{code} is not an agency in the directory."
        if not agency.active:
            return R.RECIPIENT_SUSPENDED, f"{code} is suspended from the bus."
        if code in restricted or country_of(code) in restricted:
            which = code if code in restricted else f"its country {country_of(code)}"
            return R.RESTRICTED_BY_ORIGINATOR, f"The message restricts {which}, so {code} is not told of it."
        if code not in received and tlp in self._c.notice_closed:
            return R.NOTICE_BEYOND_TLP, f"TLP:{tlp} keeps a notice about the message from {code}."
        return None

    def _start(self, message_type: str, record: dict[str, Any], *, owner: str, now: int,
               state: RoutingState, trace: list[Any] | None
               ) -> tuple[Message, dict[str, Target], list[Decision], list[str]] | Rejection:
        """The message-level checks and the expanded recipients, or why the whole message is refused."""
        if message_type not in self._rules:
            return Rejection(R.UNKNOWN_TYPE, f"{message_type} records may not be sent to an outbox (only "
                             "Alert, Query and Reply).", "message-type")
        try:
            m = self._prepare(message_type, record, owner=owner, now=now, state=state, trace=trace)
            targets, notes, hidden = self._expand(m, record["envelope"].get("addressing") or {}, state)
        except _Reject as exc:
            return exc.rejection
        except (KeyError, TypeError, AttributeError) as exc:
            return Rejection(R.INVALID, f"The record lacks or mistypes a field routing needs ({exc!r}).",
                             "well-formed")
        return m, targets, notes, hidden

    @staticmethod
    def _decide(m: Message, t: Target, rules: tuple[Rule, ...]) -> Decision:
        """The hot path: the first DENY or HOLD decides; DELIVER notes accumulate."""
        note: Verdict | None = None
        for rule in rules:
            v = rule.check(m, t)
            if v is None:
                continue
            if v.outcome != "DELIVER":
                return Decision(t.code, v.outcome, v.code, v.reason, rule.name, (), t.concealed, t.copy)
            if note is not None:  # a second note (a redacted review copy): keep both
                v = Verdict("DELIVER", v.code, f"{note.reason} {v.reason}", note.redactions + v.redactions)
            note, last = v, rule.name
        if note is None:
            return Decision(t.code, "DELIVER", None, None, "default", (), t.concealed, t.copy)
        return Decision(t.code, "DELIVER", note.code, note.reason, last, note.redactions, t.concealed, t.copy)

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

        officer = self._check_outbox(env, owner, require)
        sender = self._c.agencies.get(originator)
        require("originator-known", sender is not None, R.UNKNOWN_ORIGINATOR,
                "{} is not an agency in the directory.", originator)
        require("originator-active", sender is not None and sender.active, R.ORIGINATOR_SUSPENDED,
                "{} is suspended from the bus.", originator)
        if officer is not None:
            require("officer-in-force", officer.in_force(now), R.OFFICER_NOT_IN_FORCE,
                    "The delegation of liaison officer {} is revoked, has ended or has not begun.", owner)
        require("copy-set-by-bus", not env.get("copy"), R.COPY_MARK_BY_SENDER,
                "envelope.copy is set by the bus on the copies it delivers, never by a sender.")
        m = Message(mtype, record, originator, now)
        m.officer = owner if officer is not None else None
        if mtype == "Reply":
            self._prepare_reply(m, record, env, state, require)
        elif mtype == "Query":
            urgent = env.get("priority") == "URGENT"
            require("urgent-has-ground", not urgent or bool(record.get("urgency_ground")),
                    R.URGENT_WITHOUT_GROUND, "An URGENT query must name its urgency_ground.")
            require("consent-names-source", record["kind"] != "CONSENT" or bool(env.get("derived_from")),
                    R.CONSENT_WITHOUT_SOURCE,
                    "A CONSENT query must name the message to pass on in derived_from.")
            self._prepare_query(m, record, env, state, require)
        else:
            config = self._c.config
            if config.neutrality_review and NEUTRALITY_TAGS.intersection(record.get("sensitivity") or ()):
                m.hold = R.NEUTRALITY_REVIEW
            elif config.notice_review and record["kind"] == "NOTICE" and originator not in self._c.hubs:
                m.hold = R.NOTICE_REVIEW
        self._read_terms(m, record, env, state)
        if officer is not None:
            self._check_delegation(m, env, officer, require)
        m.waived = []
        return m

    def _check_outbox(self, env: Mapping[str, Any], owner: str,
                      require: Callable[..., None]) -> Officer | None:
        """The liaison officer writing for its agency, if it is one; else the owner is the originator."""
        originator = env["originator"]
        named_officer = env.get("officer")
        officer = self.directory.officers.get(owner) if owner != originator else None
        require("originator-owns-outbox", (originator == owner and not named_officer) or (
                    officer is not None and officer.agency == originator and named_officer == owner),
                R.SPOOFED_ORIGINATOR, "The envelope names {} as originator (officer {}) but was written "
                "to {}'s outbox; an agency sends from its own outboxes, a liaison officer from its own, "
                "naming itself in envelope.officer.", originator, named_officer, owner)
        return officer

    @staticmethod
    def _read_terms(m: Message, record: dict[str, Any], env: Mapping[str, Any], state: RoutingState) -> None:
        """The message's own terms (TLP, restrictions, expiry, biometrics) and those of its source."""
        originator = m.originator
        tlp = env.get("tlp") or "AMBER"
        m.tlp = tlp if tlp in TLP_LABELS else "RED"  # an unknown label gets the strictest reading
        restricted = env.get("restricted")
        if restricted:
            m.restricted = frozenset(str(r).upper() for r in restricted)
        expires = env.get("expires_at")
        m.expired = expires is not None and expires <= m.now
        declared = env.get("data_categories")
        protected = BIOMETRIC_CATEGORIES.intersection(declared) if declared else _NO_ONE
        found = locate(record) if record.get("subject") or record.get("criteria") else None
        if found:  # most messages hold no biometric data: no sets to build
            m.protected = protected.union(cat for _, cat in found)
            m.found = frozenset(f for f in found if f[0] != BIOMETRICS)
        else:
            m.protected = protected
        derived = env.get("derived_from")
        if derived:
            handling = state.handling_of(derived)
            if handling is None:
                m.derived_unknown = True
            else:
                provider, codes = handling
                consented = provider == originator or state.has_consent(derived, originator)
                if "H2" in codes and not consented:
                    m.h2_provider = provider
                m.source_at = state.routed_at(derived)
                m.source_received = state.delivered_to(derived) or frozenset()
                m.source_cleared = consented

    @staticmethod
    def _check_delegation(m: Message, env: Mapping[str, Any], officer: Officer,
                          require: Callable[..., None]) -> None:
        """Council Decision 2003/170/JHA: a liaison officer acts within what its agency delegated."""
        addressing = env.get("addressing") or {}
        countries = {country_of(str(code)) for code in addressing.get("agencies") or ()}
        if m.asker is not None:
            countries.add(country_of(m.asker))
        wide = bool(addressing.get("groups")) or bool(addressing.get("broadcast"))
        case = env.get("case_id")
        require("officer-within-delegation",
                case in officer.cases if wide else officer.covers(case, countries), R.OUTSIDE_DELEGATION,
                "Liaison officer {} acts for {} only in cases {} or with agencies named directly in {}.",
                officer.code, m.originator, ", ".join(sorted(officer.cases)) or "(none)",
                ", ".join(sorted(officer.countries)) or "(no country)")

    def _prepare_query(self, m: Message, record: dict[str, Any], env: Mapping[str, Any], state: RoutingState,
                       require: Callable[..., None]) -> None:
        """A case-group change must be possible; a DATA_REQUEST citing a biometric HIT waits for its
        confirmation."""
        addressing = env.get("addressing") or {}
        named = [str(code) for code in addressing.get("agencies") or ()]
        change = record.get("case_group")
        if change:
            name = str(change.get("group"))
            proposing = change.get("action") == "PROPOSE"
            why = check_change(state.case_group(name), change, sender=m.originator, invited=named,
                               now_ms=m.now, name_taken=self.directory.group(name) is not None,
                               running=state.groups_run_by(m.originator) if proposing else 0)
            wide = bool(addressing.get("groups")) or bool(addressing.get("broadcast"))
            if why is None and change.get("action") in INVITING and wide:
                why = "An invitation to a case group names the agencies it invites (no groups, no broadcast)."
            require("case-group-change", why is None, R.CASE_GROUP_REFUSED, "{}", why)
            m.case_action = str(change["action"])
        reference = record.get("reference")
        if record.get("kind") == "DATA_REQUEST" and isinstance(reference, str) and reference:
            for code in named:
                found = state.match(code, reference)
                if found is not None and found.get("asker") == m.originator:
                    m.matches[code] = str(found.get("status"))

    @staticmethod
    def _prepare_reply(m: Message, record: dict[str, Any], env: Mapping[str, Any], state: RoutingState,
                       require: Callable[..., None]) -> None:
        asked: str = env.get("correlation_id") or ""
        require("reply-has-correlation", bool(asked), R.REPLY_WITHOUT_CORRELATION,
                "A reply must name the message it answers in correlation_id.")
        m.asker = state.originator_of(asked)
        require("correlation-known", m.asker is not None, R.UNKNOWN_CORRELATION,
                "The answered message {} was never routed by the bus.", asked)
        delivered = state.delivered_to(asked)  # before anything about the answered message shows
        require("replier-was-recipient", delivered is not None and m.originator in delivered,
                R.NOT_A_RECIPIENT, "{} never received the answered message {} (sent by {}).",
                m.originator, asked, m.asker)
        outcome = record["outcome"]
        m.invitation = state.invitation_of(asked)
        require("refusal-has-ground", outcome != "REFUSED" or bool(record.get("refusal_ground"))
                or m.invitation is not None, R.REFUSAL_WITHOUT_GROUND,
                "A REFUSED reply must name its refusal_ground.")
        kind = state.query_kind_of(asked)
        m.answered_kind = kind
        allowed = INVITATION_OUTCOMES if m.invitation is not None else ALLOWED_OUTCOMES.get(
            kind, ALLOWED_OUTCOMES["INFORMATION"])
        require("outcome-fits-question", outcome in allowed, R.OUTCOME_NOT_ALLOWED,
                "{} does not answer {} (allowed: {}).", outcome,
                "an alert" if kind is None else f"a {kind} query", ", ".join(sorted(allowed)))
        confirmation = record.get("confirmation")
        if confirmation is not None:
            reference = record.get("reference") or ""
            found = state.match(m.originator, reference) if kind == "HIT_CHECK" else None
            pending = found is not None and found.get("status") == "PENDING" and found.get("query") == asked
            fits = outcome == ("HIT" if confirmation.get("confirmed") else "NO_HIT")
            named = bool(str(confirmation.get("verified_by") or "").strip())
            require("match-confirmation", pending and fits and named, R.MATCH_CONFIRMATION_INVALID,
                    "A match confirmation answers {}'s own pending biometric HIT "
                    "(reference {!r}) to this HIT_CHECK, once: outcome HIT confirms, NO_HIT rejects, and "
                    "verified_by names the officer who checked it.", m.originator, reference)
        m.hit_check_content = kind == "HIT_CHECK" and any(record.get(f) for f in HIT_CHECK_CONTENT)
        m.notify_on_delivery = kind is None and outcome in ("HIT", "FLAG")

    # -- addressing -----------------------------------------------------------------------------
    def _expand(self, m: Message, addressing: Mapping[str, Any], state: RoutingState
                ) -> tuple[dict[str, Target], list[Decision], list[str]]:
        """Recipients by code (the sender left out), decisions about addressed groups, and the
        addressed groups whose members the sender may not learn."""
        agencies = self._c.agencies
        sender = m.originator
        targets: dict[str, Target] = {}
        notes: list[Decision] = []
        hidden: list[str] = []
        if m.case_action is not None and m.case_action not in INVITING:
            return targets, notes, hidden  # the bus tells the members itself
        for code in addressing.get("agencies") or ():
            if code != sender:
                targets[code] = Target(code, agencies.get(code), NAMED, "named")
        for name in sorted(set(addressing.get("groups") or ())):  # sorted: `via` names the first group
            formed = None if self.directory.group(name) is not None else state.case_group(name)
            open_to_sender = self._group_gate(m, name, notes, formed)
            if open_to_sender is None:
                continue
            if not open_to_sender:
                hidden.append(name)
            self._add_group(m, name, targets, concealed=None if open_to_sender else name, formed=formed)
        if addressing.get("broadcast"):
            for code in self._c.active:
                t = targets.get(code)
                if t is not None:
                    t.concealed = None  # the broadcast's receipts name every active agency anyway
                elif code != sender:
                    targets[code] = Target(code, agencies[code], BROADCAST, "broadcast")
        self._add_implicit(m, targets)
        return targets, notes, hidden

    def _add_group(self, m: Message, name: str, targets: dict[str, Target], *, concealed: str | None,
                   formed: CaseGroup | None = None) -> None:
        """The members of a group as targets; one reached also through a group of the sender's is not
        concealed, and names that group in `via`. Of a group formed on the bus, a member who joined
        after the message this one passes on was sent needs its provider's consent (`m.late`)."""
        agencies, via = self._c.agencies, f"group {name}"
        members = formed.members_now(m.now) if formed is not None else self.directory.members_of(name, m.now)
        for code in sorted(members):
            t = targets.get(code)
            if t is None:
                if code != m.originator:
                    targets[code] = Target(code, agencies.get(code), GROUP, via, concealed=concealed)
                    if (formed is not None and m.source_at is not None and not m.source_cleared
                            and code not in m.source_received and formed.members[code] > m.source_at):
                        m.late.add(code)
            elif t.concealed is not None and concealed is None:
                t.concealed, t.via = None, via

    def _group_gate(self, m: Message, name: str, notes: list[Decision],
                    formed: CaseGroup | None = None) -> bool | None:
        """None (and a note) when the group reaches nobody for this sender, else whether the sender
        may see its members (a member or a hub).

        Only members and hubs may address a case group: to anyone else it answers exactly as an
        unknown name, expired or not. A standing group (a region) may be addressed by anyone; a
        sender that is neither in it nor a hub gets one receipt for the group, not one per member.
        """
        sender = m.originator
        group = self.directory.group(name)
        ended = formed.ended_why(m.now) if formed is not None else None
        if formed is not None and sender not in formed.members:  # only its members: not even the hubs
            code, why = R.NOT_A_GROUP_MEMBER, f"{sender} is not a member of the case group {name}."
        elif formed is not None and ended is not None:
            code, why = R.GROUP_EXPIRED, ended
        elif formed is not None:
            return True
        elif group is None:
            code, why = R.UNKNOWN_RECIPIENT, f"{name} is not a group in the directory."
        else:
            case = group.kind == "CASE"
            member = sender in group.members if case else name in self._c.agencies[sender].groups
            seen = member or sender in self._c.hubs
            if case and not seen:
                code, why = R.NOT_A_GROUP_MEMBER, f"{sender} is not a member of the case group {name}."
            elif group.expired(m.now):
                code, why = R.GROUP_EXPIRED, f"The case group {name} has expired and reaches nobody."
            else:
                return seen
        notes.append(Decision(f"group:{name}", "DENY", code, why, "group-valid"))
        return None

    def _add_implicit(self, m: Message, targets: dict[str, Target]) -> None:
        """Recipients the addressing does not name: the hubs reviewing a held alert, a reply's asker."""
        agencies = self._c.agencies
        if m.hold is not None:
            for hub in self._c.active_hubs:
                if hub != m.originator:
                    targets[hub] = Target(hub, agencies[hub], NAMED, "review", review=True)
        if m.asker is not None and m.asker != m.originator:
            targets[m.asker] = Target(m.asker, agencies.get(m.asker), NAMED, "asker")
        self._add_spoc_copies(m, targets)

    def _add_spoc_copies(self, m: Message, targets: dict[str, Target]) -> None:
        """Directive 2023/977: the copies a Single Point of Contact is owed, as targets marked copies
        (or, when the sender states an Art. 4(2) / 8(3) ground, as waivers for the audit)."""
        if m.type == "Query" and m.record.get("kind") == "INFORMATION" and m.case_action is None:
            addressing = m.record["envelope"].get("addressing") or {}
            pairs = [(str(code), True) for code in addressing.get("agencies") or ()]
        elif m.type == "Reply" and m.answered_kind == "INFORMATION" and m.asker is not None \
                and m.invitation is None:
            pairs = [(m.asker, False)]  # the information given in answer to a direct request
        else:
            return
        for counterpart, request in pairs:
            for spoc, kind, code in spoc_copies(self.directory, m.originator, counterpart, request=request):
                if spoc in targets or spoc == m.originator:
                    continue  # it gets the message itself
                self._copy_or_waiver(m, targets, spoc, (kind, counterpart), code)

    def _copy_or_waiver(self, m: Message, targets: dict[str, Target], spoc: str, copy: tuple[str, str],
                        code: str) -> None:
        ground = m.record["envelope"].get("spoc_copy_waiver")
        if ground:
            article = "4(2)" if code == R.SPOC_COPY_ART_4_1 else "8(3)"
            m.waived.append(Decision(spoc, "DENY", R.SPOC_COPY_WAIVED,
                                     f"{m.originator} did not copy {spoc} on "
                                     f"the ground {ground} (Directive 2023/977 Art. {article}).", "spoc-copy",
                                     copy=copy))
            return
        targets[spoc] = Target(spoc, self._c.agencies.get(spoc), NAMED, f"SPOC copy of {copy[1]}", copy=copy,
                               copy_code=code)
        m.copies = True


def spoc_copies(directory: Directory, sender: str, counterpart: str, *, request: bool
                ) -> list[tuple[str, str, str]]:
    """(SPOC, CopyKind, reason code) of each copy Directive 2023/977 requires of a request for
    information from `sender` to `counterpart` (request=True), or of the information a competent
    authority `sender` gives in answer to `counterpart`'s direct request (request=False).

    Only between two states whose SPOCs the directory marks (the Directive's Member States):
    Art. 4(1): a designated authority's request to the other state's SPOC: a copy to its own SPOC.
    Art. 8(1): a SPOC's request directly to a competent authority of another state: a copy to that
    state's SPOC; the authority's answer: a copy to its own SPOC.
    Art. 8(2): a competent authority's request directly to one of another state, and the answer: a
    copy to the sender's own SPOC and to the other state's SPOC.
    """
    agencies = directory.agencies
    me, other = agencies.get(sender), agencies.get(counterpart)
    if me is None or other is None or me.country == other.country:
        return []
    own, theirs = directory.spoc_of(me.country), directory.spoc_of(other.country)
    if own is None or theirs is None:
        return []
    return _request_copies(me, other, own, theirs) if request else _answer_copies(me, other, own, theirs)


def _request_copies(me: Agency, other: Agency, own: str, theirs: str) -> list[tuple[str, str, str]]:
    if other.spoc:
        return [(own, "SPOC_OWN", R.SPOC_COPY_ART_4_1)] if me.designated and not me.spoc else []
    if me.spoc:
        return [(theirs, "SPOC_OTHER", R.SPOC_COPY_ART_8)]
    return [(own, "SPOC_OWN", R.SPOC_COPY_ART_8), (theirs, "SPOC_OTHER", R.SPOC_COPY_ART_8)]


def _answer_copies(me: Agency, other: Agency, own: str, theirs: str) -> list[tuple[str, str, str]]:
    if me.spoc:
        return []
    if other.spoc:
        return [(own, "SPOC_OWN", R.SPOC_COPY_ART_8)]
    return [(own, "SPOC_OWN", R.SPOC_COPY_ART_8), (theirs, "SPOC_OTHER", R.SPOC_COPY_ART_8)]


def _upper(codes: Iterable[str]) -> frozenset[str]:
    return frozenset(str(c).upper() for c in codes)


def _label(tlp: str | None) -> str:
    label = tlp or "AMBER"
    return label if label in TLP_LABELS else "RED"  # an unknown label gets the strictest reading


def compile_policy(policy_cfg: PolicyConfig | Mapping[str, Any], directory: Directory) -> PolicyEngine:
    """Compile a policy (a PolicyConfig or the parsed policy file) over a directory snapshot."""
    config = policy_cfg if isinstance(policy_cfg, PolicyConfig) else PolicyConfig.from_mapping(policy_cfg)
    return PolicyEngine(config, directory)

