"""The per-recipient sharing rules, each a small object with a name and a `check`.

A rule returns None (no objection), or a Verdict: DENY or HOLD stop the evaluation for that
recipient; DELIVER adds a note (a reason, fields to redact) and lets the following rules run.
Everything a rule needs about the message is computed once per message in `Message`; a rule's
`check` is dict and set lookups only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from liaison.directory import Agency, country_of
from liaison.policy import reasons as R  # short alias: rules cite many codes
from liaison.policy.model import Outcome
from liaison.policy.redaction import Found, paths_for

if TYPE_CHECKING:
    from liaison.policy.engine import Compiled

# How a recipient was reached; lower is closer. Review copies and a reply's asker count as named.
NAMED, GROUP, BROADCAST = 0, 1, 2


class Verdict(NamedTuple):
    outcome: Outcome  # DENY and HOLD decide; DELIVER adds a note and evaluation goes on
    code: str
    reason: str
    redactions: tuple[str, ...] = ()


class Target:
    """One expanded recipient of one message."""

    __slots__ = ("agency", "channel", "code", "concealed", "copy", "copy_code", "review", "via")

    def __init__(self, code: str, agency: Agency | None, channel: int, via: str, *,
                 review: bool = False, concealed: str | None = None, copy: tuple[str, str] | None = None,
                 copy_code: str | None = None) -> None:
        self.code = code
        self.agency = agency
        self.channel = channel
        self.via = via
        self.review = review  # a hub's copy of a held alert, for review
        self.concealed = concealed  # reached only through this group, which the sender is not in
        self.copy = copy  # (CopyKind, addressee): a copy the law requires, e.g. for a SPOC
        self.copy_code = copy_code  # the reason code naming that law


class Message:
    """What the rules need to know about one message, computed once before the recipients."""

    __slots__ = ("answered_kind", "asker", "case_action", "copies", "derived_unknown", "expired", "found",
                 "h2_provider", "hit_check_content", "hold", "invitation", "late", "matches",
                 "notify_on_delivery", "now", "officer", "originator", "protected", "record", "restricted",
                 "source_at", "source_cleared", "source_received", "tlp", "type", "waived")

    def __init__(self, message_type: str, record: dict[str, Any], originator: str, now: int) -> None:
        self.type = message_type
        self.record = record
        self.originator = originator
        self.now = now
        self.tlp = "AMBER"
        self.restricted: frozenset[str] = frozenset()
        self.expired = False
        self.protected: frozenset[str] = frozenset()  # biometric categories present or declared
        self.found: Found = frozenset()  # (place, category) of biometric entries of identifiers, criteria
        self.h2_provider: str | None = None  # set when the H2 provider's consent is missing
        self.derived_unknown = False  # derived_from names a message the bus never routed
        self.hold: str | None = None  # NOTICE_REVIEW or NEUTRALITY_REVIEW
        self.asker: str | None = None  # replies: the originator of the answered message
        self.answered_kind: str | None = None  # replies: the kind of the answered query (None: an alert)
        self.hit_check_content = False  # replies to a HIT_CHECK carrying more than a reference
        self.notify_on_delivery = False  # FLAG and HIT replies to alerts: tell the hubs
        self.officer: str | None = None  # the liaison officer sending on the originator's behalf
        self.case_action: str | None = None  # a query changing a case group: its action
        self.invitation: str | None = None  # a reply to a case-group invitation: the group
        self.matches: dict[str, str] = {}  # DATA_REQUEST: addressee -> status of the match it cites
        self.source_at: int | None = None  # derived_from: when the bus routed that message
        self.source_received: frozenset[str] = frozenset()  # ... and who received it
        self.source_cleared = True  # ... and whether its provider lets the sender pass it on
        self.late: set[str] = set()  # members reached through a case group they joined after the source
        self.copies = False  # some targets are copies the law requires
        self.waived: list[Any] = []  # Decisions: copies waived on the sender's stated ground


class Rule:
    """A named check of one message for one recipient."""

    name = "rule"

    def __init__(self, compiled: Compiled) -> None:
        self.c = compiled

    def applies(self, m: Message) -> bool:
        """False when `check` cannot object to any recipient of `m` (the router then skips it)."""
        return True

    def check(self, m: Message, t: Target) -> Verdict | None:
        raise NotImplementedError


class RecipientKnown(Rule):
    name = "recipient-known"

    def check(self, m: Message, t: Target) -> Verdict | None:
        if t.agency is None:
            return Verdict("DENY", R.UNKNOWN_RECIPIENT, f"{t.code} is not an agency in the directory.")
        return None


class RecipientActive(Rule):
    name = "recipient-active"

    def check(self, m: Message, t: Target) -> Verdict | None:
        if t.agency is not None and t.agency.status != "ACTIVE":
            return Verdict("DENY", R.RECIPIENT_SUSPENDED, f"{t.code} is suspended from the bus.")
        return None


class NotExpired(Rule):
    name = "not-expired"

    def applies(self, m: Message) -> bool:
        return m.expired

    def check(self, m: Message, t: Target) -> Verdict | None:
        if m.expired:
            return Verdict("DENY", R.EXPIRED, "The message expired before it could be delivered.")
        return None


class NotRestricted(Rule):
    name = "not-restricted"

    def applies(self, m: Message) -> bool:
        return bool(m.restricted)

    def check(self, m: Message, t: Target) -> Verdict | None:
        restricted = m.restricted
        if restricted and (t.code in restricted or country_of(t.code) in restricted):
            which = t.code if t.code in restricted else f"its country {country_of(t.code)}"
            return Verdict("DENY", R.RESTRICTED_BY_ORIGINATOR,
                           f"{m.originator} restricted {which}, so {t.code} may not receive it.")
        return None


class TlpReach(Rule):
    """TLP 2.0: how far from the named recipients a label lets the message go."""

    name = "tlp"

    def applies(self, m: Message) -> bool:
        return m.tlp in self.c.tlp_limits

    def check(self, m: Message, t: Target) -> Verdict | None:
        limit = self.c.tlp_limits.get(m.tlp)
        if limit is not None and t.channel > limit[0]:
            code = limit[1] if t.channel == BROADCAST else limit[2]
            return Verdict("DENY", code, f"TLP:{m.tlp} may not reach {t.code} through {t.via}.")
        return None


class OnwardSharing(Rule):
    """H2: not to be passed on without the provider's permission."""

    name = "onward-sharing"

    def applies(self, m: Message) -> bool:
        return m.h2_provider is not None or (m.derived_unknown and self.c.config.unknown_source == "deny")

    def check(self, m: Message, t: Target) -> Verdict | None:
        provider = m.h2_provider
        if provider is not None and t.code != provider:
            return Verdict("DENY", R.NO_CONSENT_FOR_H2, f"{provider} has not consented to {m.originator} "
                           "passing on its H2 information.")
        if m.derived_unknown and self.c.config.unknown_source == "deny":
            return Verdict("DENY", R.UNKNOWN_SOURCE, "derived_from names a message the bus never routed.")
        return None


class Biometrics(Rule):
    """Biometric categories need the recipient's clearance and an agreement covering them."""

    name = "biometrics"

    def __init__(self, compiled: Compiled, *, redact: bool) -> None:
        super().__init__(compiled)
        self.redact = redact

    def applies(self, m: Message) -> bool:
        return bool(m.protected)

    def check(self, m: Message, t: Target) -> Verdict | None:
        need = m.protected
        if not need or t.agency is None:
            return None
        cleared = t.agency.clearances
        missing = need - cleared
        until = self.c.coverage(m.originator, t.code)  # category -> covered until (ms)
        now = m.now
        unagreed = frozenset(c for c in need if c in cleared and until.get(c, 0) <= now)
        if not missing and not unagreed:
            return None
        if missing:
            code, why = R.BIOMETRIC_NOT_CLEARED, f"{t.code} has no clearance for {', '.join(sorted(missing))}"
        else:
            code, why = R.NO_AGREEMENT, (f"no agreement between {m.originator} and {t.code} covers "
                                         f"{', '.join(sorted(unagreed))}")
        if not self.redact:
            return Verdict("DENY", code, why[0].upper() + why[1:] + ".")
        paths = paths_for(missing | unagreed, m.found)
        return Verdict("DELIVER", code, f"Removed {', '.join(paths)}: {why}.", paths)


class NeutralityReview(Rule):
    name = "neutrality-review"

    def applies(self, m: Message) -> bool:
        return m.hold == R.NEUTRALITY_REVIEW

    def check(self, m: Message, t: Target) -> Verdict | None:
        if m.hold != R.NEUTRALITY_REVIEW:
            return None
        if t.review:
            return Verdict("DELIVER", R.FOR_REVIEW, "Delivered to the hub for its neutrality review.")
        return Verdict("HOLD", R.NEUTRALITY_REVIEW, "Held for the hub's neutrality review (Article 3).")


class NoticeReview(Rule):
    name = "notice-review"

    def applies(self, m: Message) -> bool:
        return m.hold == R.NOTICE_REVIEW

    def check(self, m: Message, t: Target) -> Verdict | None:
        if m.hold != R.NOTICE_REVIEW:
            return None
        if t.review:
            return Verdict("DELIVER", R.FOR_REVIEW, "Delivered to the hub for review before circulation.")
        return Verdict("HOLD", R.NOTICE_REVIEW,
                       f"Held until the hub reviews this notice from {m.originator}.")


class ReplyToAsker(Rule):
    name = "reply-to-asker"

    def check(self, m: Message, t: Target) -> Verdict | None:
        if t.code != m.asker and t.copy is None:
            return Verdict("DENY", R.REPLY_NOT_TO_ASKER, f"The reply goes only to {m.asker}, who asked.")
        return None


class HitCheckContent(Rule):
    name = "hit-check-content"

    def applies(self, m: Message) -> bool:
        return m.hit_check_content

    def check(self, m: Message, t: Target) -> Verdict | None:
        if m.hit_check_content:
            return Verdict("DENY", R.PERSONAL_DATA_IN_HIT_CHECK,
                           "A reply to a HIT_CHECK may carry only HIT or NO_HIT and a reference.")
        return None


class LateMember(Rule):
    """A member who joined a case group after a message was sent to it gets that message's content
    only with its provider's consent (the consent mechanism of H2)."""

    name = "late-member"

    def applies(self, m: Message) -> bool:
        return bool(m.late)

    def check(self, m: Message, t: Target) -> Verdict | None:
        if t.code in m.late:
            return Verdict("DENY", R.LATE_MEMBER_NO_CONSENT, f"{t.code} joined the case group after the "
                           "message this one passes on; its provider has not consented.")
        return None


class MatchConfirmed(Rule):
    """Prum II: no data about a person follows a biometric HIT until a person at the data owner
    has confirmed the match."""

    name = "match-confirmed"

    def applies(self, m: Message) -> bool:
        return bool(m.matches)

    def check(self, m: Message, t: Target) -> Verdict | None:
        status = m.matches.get(t.code)
        if status == "PENDING":
            return Verdict("HOLD", R.MATCH_NOT_CONFIRMED, f"Held until {t.code} confirms the biometric match "
                           "this request cites (Prum II); it is delivered then.")
        if status == "REJECTED":
            return Verdict("DENY", R.MATCH_REJECTED, f"{t.code} rejected the biometric match this request "
                           "cites; no data follows.")
        return None


class SpocCopy(Rule):
    """Directive 2023/977: the copies a Single Point of Contact is owed (a note, not a condition)."""

    name = "spoc-copy"

    def applies(self, m: Message) -> bool:
        return m.copies

    def check(self, m: Message, t: Target) -> Verdict | None:
        if t.copy is None or t.copy_code is None:
            return None
        law = "Art. 4(1)" if t.copy_code == R.SPOC_COPY_ART_4_1 else "Art. 8"
        return Verdict("DELIVER", t.copy_code, f"Copy for {t.code}, a Single Point of Contact, of the "
                       f"exchange with {t.copy[1]} (Directive 2023/977 {law}).")


def rule_lists(c: Compiled) -> dict[str, tuple[Rule, ...]]:
    """The ordered rules per message type: denials first, then holds, then notes."""
    redact = c.config.biometrics == "redact"
    bio = Biometrics(c, redact=redact)
    deny_bio: tuple[Rule, ...] = () if redact else (bio,)
    note_bio: tuple[Rule, ...] = (bio,) if redact else ()
    base = (RecipientKnown(c), RecipientActive(c), NotExpired(c), NotRestricted(c))
    return {
        "Alert": (*base, TlpReach(c), OnwardSharing(c), LateMember(c), *deny_bio, NeutralityReview(c),
                  NoticeReview(c), *note_bio),
        "Query": (*base, TlpReach(c), OnwardSharing(c), LateMember(c), *deny_bio, MatchConfirmed(c),
                  SpocCopy(c), *note_bio),
        "Reply": (RecipientKnown(c), ReplyToAsker(c), *base[1:], HitCheckContent(c), OnwardSharing(c),
                  *deny_bio, SpocCopy(c), *note_bio),
    }
