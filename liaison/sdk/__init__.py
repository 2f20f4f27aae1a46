"""The Python SDK for agency systems: build, send and receive bus messages."""

from liaison.sdk.builders import (
    MessageError,
    alert,
    case_group_change,
    envelope,
    invitation_answer,
    match_confirmation,
    query,
    reply,
)
from liaison.sdk.client import (
    AgencyClient,
    AgencyNotOnboarded,
    NotStarted,
    ReplyTimeout,
    SendFailed,
    Subscription,
    TopicMissing,
    UndecodableMessage,
)

__all__ = [
    "AgencyClient",
    "AgencyNotOnboarded",
    "MessageError",
    "NotStarted",
    "ReplyTimeout",
    "SendFailed",
    "Subscription",
    "TopicMissing",
    "UndecodableMessage",
    "alert",
    "case_group_change",
    "envelope",
    "invitation_answer",
    "match_confirmation",
    "query",
    "reply",
]
