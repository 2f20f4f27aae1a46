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

# -- holds: waiting for the hub's review ------------------------------------------------------------
NOTICE_REVIEW = "NOTICE_REVIEW"
NEUTRALITY_REVIEW = "NEUTRALITY_REVIEW"

# -- deliveries with a note ------------------------------------------------------------------------
FOR_REVIEW = "FOR_REVIEW"
FIELDS_REMOVED = "FIELDS_REMOVED"
GROUP_ROUTED = "GROUP_ROUTED"

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
    NOTICE_BEYOND_TLP: "A notice about a message (hit notification, hub notice) reaches an agency "
                       "that did not receive the message only under TLP:CLEAR, GREEN or AMBER (unless "
                       "the policy keeps AMBER to named agencies), never under RED or AMBER+STRICT.",
}
"""Code -> what it means, in one sentence."""

REJECTIONS = frozenset({UNKNOWN_TYPE, INVALID, SPOOFED_ORIGINATOR, UNKNOWN_ORIGINATOR, ORIGINATOR_SUSPENDED,
                        REPLY_WITHOUT_CORRELATION, UNKNOWN_CORRELATION, REFUSAL_WITHOUT_GROUND,
                        OUTCOME_NOT_ALLOWED, URGENT_WITHOUT_GROUND, CONSENT_WITHOUT_SOURCE,
                        NOT_A_RECIPIENT})
"""Codes that reject the whole message (dead letter) rather than one recipient."""

HOLDS = frozenset({NOTICE_REVIEW, NEUTRALITY_REVIEW})
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
