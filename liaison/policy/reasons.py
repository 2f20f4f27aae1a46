"""Every reason code the sharing policy can give, with its meaning: stable, documented, greppable.

Audit records, dead letters and metrics carry these codes; the README prints this table. A sender's
receipt carries the public view of a code (`PUBLIC`): any agency may be compromised, so nothing
in a receipt tells a sender about a third agency's state (suspension, clearances, agreements,
membership of a case group it does not belong to).
"""

from __future__ import annotations

# -- whole-message rejections: the record goes to the dead-letter topic, nobody receives it --------
UNKNOWN_TYPE = "UNKNOWN_TYPE"
INVALID = "INVALID"
SPOOFED_ORIGINATOR = "SPOOFED_ORIGINATOR"
UNKNOWN_ORIGINATOR = "UNKNOWN_ORIGINATOR"
ORIGINATOR_SUSPENDED = "ORIGINATOR_SUSPENDED"
REPLY_WITHOUT_CORRELATION = "REPLY_WITHOUT_CORRELATION"
UNKNOWN_CORRELATION = "UNKNOWN_CORRELATION"
REFUSAL_WITHOUT_GROUND = "REFUSAL_WITHOUT_GROUND"
OUTCOME_NOT_ALLOWED = "OUTCOME_NOT_ALLOWED"
URGENT_WITHOUT_GROUND = "URGENT_WITHOUT_GROUND"
CONSENT_WITHOUT_SOURCE = "CONSENT_WITHOUT_SOURCE"
NOT_A_RECIPIENT = "NOT_A_RECIPIENT"
OFFICER_NOT_IN_FORCE = "OFFICER_NOT_IN_FORCE"
OUTSIDE_DELEGATION = "OUTSIDE_DELEGATION"
COPY_MARK_BY_SENDER = "COPY_MARK_BY_SENDER"
CASE_GROUP_REFUSED = "CASE_GROUP_REFUSED"
MATCH_CONFIRMATION_INVALID = "MATCH_CONFIRMATION_INVALID"

# -- per-recipient denials -------------------------------------------------------------------------
UNKNOWN_RECIPIENT = "UNKNOWN_RECIPIENT"
NOT_A_GROUP_MEMBER = "NOT_A_GROUP_MEMBER"
GROUP_EXPIRED = "GROUP_EXPIRED"
RECIPIENT_SUSPENDED = "RECIPIENT_SUSPENDED"
EXPIRED = "EXPIRED"
RESTRICTED_BY_ORIGINATOR = "RESTRICTED_BY_ORIGINATOR"
REPLY_NOT_TO_ASKER = "REPLY_NOT_TO_ASKER"
PERSONAL_DATA_IN_HIT_CHECK = "PERSONAL_DATA_IN_HIT_CHECK"
TLP_RED_NOT_NAMED = "TLP_RED_NOT_NAMED"
TLP_AMBER_NOT_NAMED = "TLP_AMBER_NOT_NAMED"
TLP_AMBER_BROADCAST = "TLP_AMBER_BROADCAST"
TLP_GREEN_BROADCAST = "TLP_GREEN_BROADCAST"
NO_CONSENT_FOR_H2 = "NO_CONSENT_FOR_H2"
UNKNOWN_SOURCE = "UNKNOWN_SOURCE"
BIOMETRIC_NOT_CLEARED = "BIOMETRIC_NOT_CLEARED"
NO_AGREEMENT = "NO_AGREEMENT"
NOT_DELIVERABLE = "NOT_DELIVERABLE"
LATE_MEMBER_NO_CONSENT = "LATE_MEMBER_NO_CONSENT"
MATCH_REJECTED = "MATCH_REJECTED"

# -- holds: waiting for the hub's review ------------------------------------------------------------
NOTICE_REVIEW = "NOTICE_REVIEW"
NEUTRALITY_REVIEW = "NEUTRALITY_REVIEW"
MATCH_NOT_CONFIRMED = "MATCH_NOT_CONFIRMED"

# -- deliveries with a note ------------------------------------------------------------------------
FOR_REVIEW = "FOR_REVIEW"
FIELDS_REMOVED = "FIELDS_REMOVED"
GROUP_ROUTED = "GROUP_ROUTED"
SPOC_COPY_ART_4_1 = "SPOC_COPY_ART_4_1"
SPOC_COPY_ART_8 = "SPOC_COPY_ART_8"
OFFICER_COPY = "OFFICER_COPY"

# -- state put on record, and copies waived: audit only --------------------------------------------
CASE_GROUP_PROPOSED = "CASE_GROUP_PROPOSED"
CASE_GROUP_INVITED = "CASE_GROUP_INVITED"
CASE_GROUP_JOINED = "CASE_GROUP_JOINED"
CASE_GROUP_DECLINED = "CASE_GROUP_DECLINED"
CASE_GROUP_REMOVED = "CASE_GROUP_REMOVED"
CASE_GROUP_EXTENDED = "CASE_GROUP_EXTENDED"
CASE_GROUP_CLOSED = "CASE_GROUP_CLOSED"
CASE_GROUP_ENDED = "CASE_GROUP_ENDED"
MATCH_PENDING = "MATCH_PENDING"
MATCH_CONFIRMED = "MATCH_CONFIRMED"
SPOC_COPY_WAIVED = "SPOC_COPY_WAIVED"

# -- notices (hit notifications, hub notices) refused: audit only ----------------------------------
NOTICE_BEYOND_TLP = "NOTICE_BEYOND_TLP"

REASONS: dict[str, str] = {
    UNKNOWN_TYPE: "Only Alert, Query and Reply records may be written to an outbox.",
    INVALID: "The record lacks a field that routing needs.",
    SPOOFED_ORIGINATOR: "The envelope's originator is not the agency that owns the outbox topic it was "
                        "written to.",
    UNKNOWN_ORIGINATOR: "The originator is not an agency in the directory.",
    ORIGINATOR_SUSPENDED: "The originator is suspended from the bus and may not send.",
    REPLY_WITHOUT_CORRELATION: "A reply must name the query or alert it answers in correlation_id.",
    UNKNOWN_CORRELATION: "The message a reply answers is not one the bus delivered to the replier.",
    REFUSAL_WITHOUT_GROUND: "A REFUSED reply must name a refusal ground (Directive 2023/977 Article 6).",
    OUTCOME_NOT_ALLOWED: "The reply's outcome does not answer that kind of message (HIT_CHECK: HIT or "
                         "NO_HIT; CONSENT: GRANTED or REFUSED; FLAG answers only an alert).",
    URGENT_WITHOUT_GROUND: "An URGENT query must name its urgency ground (Directive 2023/977).",
    CONSENT_WITHOUT_SOURCE: "A CONSENT query must name the message to pass on in derived_from.",
    NOT_A_RECIPIENT: "The replier never received the message it answers.",
    UNKNOWN_RECIPIENT: "The addressee is not an agency in the directory, or not a group the sender "
                       "may address.",
    NOT_A_GROUP_MEMBER: "Only the members of a case group and the hubs may address it; to anyone "
                        "else it answers as an unknown group.",
    GROUP_EXPIRED: "The case group has expired; addressing it reaches nobody.",
    RECIPIENT_SUSPENDED: "The recipient is suspended from the bus.",
    EXPIRED: "The message expired (envelope.expires_at) before it could be delivered.",
    RESTRICTED_BY_ORIGINATOR: "The originator listed this agency or its country as restricted.",
    REPLY_NOT_TO_ASKER: "A reply goes only to the originator of the message it answers.",
    PERSONAL_DATA_IN_HIT_CHECK: "A reply to a HIT_CHECK carries only HIT or NO_HIT and a reference, "
                                "never subject data, free text or a location.",
    TLP_RED_NOT_NAMED: "TLP:RED goes only to agencies named directly, never through a group or "
                       "broadcast.",
    TLP_AMBER_NOT_NAMED: "This policy sends TLP:AMBER(+STRICT) only to agencies named directly.",
    TLP_AMBER_BROADCAST: "TLP:AMBER and TLP:AMBER+STRICT are never broadcast; name the agencies or "
                         "a group.",
    TLP_GREEN_BROADCAST: "TLP:GREEN goes to groups and named agencies, never to a broadcast; only "
                         "TLP:CLEAR may be broadcast.",
    NO_CONSENT_FOR_H2: "The message passes on another agency's H2 information without that "
                       "agency's recorded consent.",
    UNKNOWN_SOURCE: "The message names in derived_from a message the bus never routed, and this "
                    "policy refuses that.",
    BIOMETRIC_NOT_CLEARED: "The recipient has no clearance for a biometric category in the message.",
    NO_AGREEMENT: "No agreement in force between originator and recipient covers a biometric "
                  "category in the message.",
    NOT_DELIVERABLE: "The recipient cannot receive this message under the bus's rules.",
    NOTICE_REVIEW: "A notice from a non-hub agency is held until the hub has reviewed it.",
    NEUTRALITY_REVIEW: "An alert tagged political, military, religious or racial is held for the "
                       "hub's neutrality review (INTERPOL Constitution Article 3).",
    FOR_REVIEW: "Delivered to the hub so that it can review a held alert.",
    FIELDS_REMOVED: "Delivered without the fields holding protected data that this recipient may not "
                    "receive under the bus's rules.",
    GROUP_ROUTED: "Sent to the members of a group the sender does not belong to, each as the bus's "
                  "rules allow; what each member got is not shown.",
    OFFICER_NOT_IN_FORCE: "The liaison officer's delegation is revoked, has ended or has not begun.",
    OUTSIDE_DELEGATION: "A liaison officer sends for its agency only within its delegation: a delegated "
                        "case, or agencies named directly in its partner countries.",
    COPY_MARK_BY_SENDER: "envelope.copy is set by the bus when it delivers a copy, never by a sender.",
    CASE_GROUP_REFUSED: "The case-group change is not possible (name taken, not the initiator, group "
                        "ended, or an end date missing); the reason says which.",
    MATCH_CONFIRMATION_INVALID: "A match confirmation answers the replier's own pending biometric HIT to "
                                "that HIT_CHECK (same reference) once: HIT to confirm, NO_HIT to reject, "
                                "naming the officer who verified it.",
    LATE_MEMBER_NO_CONSENT: "The message passes on one sent to the case group before this member "
                            "joined; the provider of that message has not consented.",
    MATCH_REJECTED: "The data owner rejected the biometric match this request cites; no data follows "
                    "(Prum II).",
    MATCH_NOT_CONFIRMED: "Held: the biometric match this request cites is not yet confirmed by a person "
                         "at the data owner (Prum II); it is delivered once they confirm it.",
    SPOC_COPY_ART_4_1: "A copy of a designated authority's request to another state's SPOC, for its own "
                       "SPOC (Directive 2023/977 Art. 4(1)).",
    SPOC_COPY_ART_8: "A copy of an exchange made directly between competent authorities of two states, "
                     "for a Single Point of Contact (Directive 2023/977 Art. 8).",
    OFFICER_COPY: "A copy for the agency's liaison officer, whose delegation covers the message.",
    CASE_GROUP_PROPOSED: "A case group was proposed and its invitations sent.",
    CASE_GROUP_INVITED: "More agencies were invited to a case group.",
    CASE_GROUP_JOINED: "An invited agency accepted and joined the case group.",
    CASE_GROUP_DECLINED: "An invited agency declined to join the case group.",
    CASE_GROUP_REMOVED: "Members were removed from the case group.",
    CASE_GROUP_EXTENDED: "The case group's end date was moved.",
    CASE_GROUP_CLOSED: "The initiator closed the case group; it reaches nobody now.",
    CASE_GROUP_ENDED: "The case group's end date passed; it reaches nobody now.",
    MATCH_PENDING: "A biometric HIT awaits the data owner's human confirmation (Prum II).",
    MATCH_CONFIRMED: "The data owner confirmed the biometric match; requests citing it may be delivered.",
    SPOC_COPY_WAIVED: "The sender stated a ground for not copying a SPOC (Directive 2023/977 Art. 4(2) "
                      "or 8(3)): no copy was sent.",
    NOTICE_BEYOND_TLP: "A notice about a message (hit notification, hub notice) reaches an agency "
                       "that did not receive the message only under TLP:CLEAR, GREEN or AMBER (unless "
                       "the policy keeps AMBER to named agencies), never under RED or AMBER+STRICT.",
}
"""Code -> what it means, in one sentence."""

REJECTIONS = frozenset({UNKNOWN_TYPE, INVALID, SPOOFED_ORIGINATOR, UNKNOWN_ORIGINATOR, ORIGINATOR_SUSPENDED,
                        REPLY_WITHOUT_CORRELATION, UNKNOWN_CORRELATION, REFUSAL_WITHOUT_GROUND,
                        OUTCOME_NOT_ALLOWED, URGENT_WITHOUT_GROUND, CONSENT_WITHOUT_SOURCE,
                        NOT_A_RECIPIENT, OFFICER_NOT_IN_FORCE, OUTSIDE_DELEGATION, COPY_MARK_BY_SENDER,
                        CASE_GROUP_REFUSED, MATCH_CONFIRMATION_INVALID})
"""Codes that reject the whole message (dead letter) rather than one recipient."""

HOLDS = frozenset({NOTICE_REVIEW, NEUTRALITY_REVIEW, MATCH_NOT_CONFIRMED})
"""Codes of HOLD decisions."""

REDACTIONS = frozenset({BIOMETRIC_NOT_CLEARED, NO_AGREEMENT})
"""Codes that deny, or deliver with fields removed, depending on the policy's `biometrics` setting."""

PUBLIC: dict[str, str] = {
    # a third agency's state: the sender learns that it cannot reach it, not why
    RECIPIENT_SUSPENDED: NOT_DELIVERABLE,
    BIOMETRIC_NOT_CLEARED: NOT_DELIVERABLE,
    NO_AGREEMENT: NOT_DELIVERABLE,
    # a case group the sender is not in answers as an unknown name does, in the same words
    NOT_A_GROUP_MEMBER: UNKNOWN_RECIPIENT,
    UNKNOWN_RECIPIENT: UNKNOWN_RECIPIENT,
    # a message the replier never received answers as one the bus never routed (no asker, no kind)
    NOT_A_RECIPIENT: UNKNOWN_CORRELATION,
    UNKNOWN_CORRELATION: UNKNOWN_CORRELATION,
    # the general sentence, which does not name the provider of the H2 information
    NO_CONSENT_FOR_H2: NO_CONSENT_FOR_H2,
}
"""Detail code (audit, dead letters, metrics) -> the code a sender's receipt shows, with that code's
sentence from REASONS instead of the detailed reason. Codes not listed are about the sender's own
message (its TLP, restrictions, expiry, form) and are shown as they are, with their reason. A
delivery with fields removed shows FIELDS_REMOVED whatever rule removed them."""
