"""Case groups formed on the bus by their members: a joint team's state and the changes to it.

A joint investigation team is set up by agreement, for one purpose and a limited period (EU MLA
Convention 2000 Art. 13; Framework Decision 2002/465/JHA): here an agency proposes it in a Query
(`case_group.action` PROPOSE), each invited agency accepts (GRANTED) or declines (REFUSED) with a
Reply, and the initiator adds, removes, extends or closes it. The router keeps the state in the
compacted `bus.casegroups` topic (key: the group's name, value: `CaseGroup.to_value()`); this
module is the pure logic, checked by unit tests without Kafka.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from liaison.directory import GROUP_NAME

ACTIONS = ("PROPOSE", "ADD", "REMOVE", "EXTEND", "CLOSE")
INVITING = frozenset({"PROPOSE", "ADD"})
"""Actions whose query goes to the agencies it invites; the others are told to the members."""

MAX_MEMBERS = 100
"""Members and open invitations of one group together: a joint team is a handful of agencies."""
MAX_HISTORY = 200
"""History entries kept per group (the audit trail keeps every change regardless)."""
DAY_MS = 86_400_000
MAX_TERM_MS = 730 * DAY_MS
"""How far ahead an end date may lie: a team runs two years at a time at most, then is extended."""
RETENTION_MS = 90 * DAY_MS
"""How long after its end date a group stays in `bus.casegroups` (then its name is free again)."""
MAX_RUNNING = 50
"""Groups one agency may run at a time: each is state every router keeps and sweeps, so a
compromised agency must not be able to propose them without end."""


@dataclass(frozen=True, slots=True)
class CaseGroup:
    """One case group as the bus knows it."""

    name: str
    initiator: str
    ends_at: int
    created_at: int
    purpose: str | None = None
    legal_basis: str | None = None
    case_id: str | None = None
    status: str = "ACTIVE"  # ACTIVE or CLOSED (an ACTIVE group past its end date has ended too)
    members: Mapping[str, int] = field(default_factory=dict)  # code -> when it joined (ms)
    invited: Mapping[str, str] = field(default_factory=dict)  # code -> id of the inviting query
    left: Mapping[str, int] = field(default_factory=dict)  # code -> when it was removed or declined
    history: tuple[Mapping[str, Any], ...] = ()

    def in_force(self, now_ms: int) -> bool:
        return self.status == "ACTIVE" and now_ms < self.ends_at

    def members_now(self, now_ms: int) -> frozenset[str]:
        """Who the group reaches now: its members while it is in force, else nobody."""
        return frozenset(self.members) if self.in_force(now_ms) else frozenset()

    def ended_why(self, now_ms: int) -> str | None:
        if self.status == "CLOSED":
            return f"The case group {self.name} was closed by {self.initiator} and reaches nobody."
        if now_ms >= self.ends_at:
            return f"The case group {self.name} has ended and reaches nobody."
        return None

    # -- the compacted-topic form -------------------------------------------------------------------
    def to_value(self) -> dict[str, Any]:
        return {"name": self.name, "initiator": self.initiator, "ends_at": self.ends_at,
                "created_at": self.created_at, "purpose": self.purpose, "legal_basis": self.legal_basis,
                "case_id": self.case_id, "status": self.status, "members": dict(self.members),
                "invited": dict(self.invited), "left": dict(self.left), "history": list(self.history),
                "x": self.ends_at + RETENTION_MS}  # the router's sweep deletes it then

    @classmethod
    def from_value(cls, value: Mapping[str, Any]) -> CaseGroup:
        return cls(name=str(value["name"]), initiator=str(value["initiator"]), ends_at=int(value["ends_at"]),
                   created_at=int(value["created_at"]), purpose=value.get("purpose"),
                   legal_basis=value.get("legal_basis"), case_id=value.get("case_id"),
                   status=str(value.get("status", "ACTIVE")), members=dict(value.get("members") or {}),
                   invited=dict(value.get("invited") or {}), left=dict(value.get("left") or {}),
                   history=tuple(value.get("history") or ()))


def check_change(group: CaseGroup | None, change: Mapping[str, Any], *, sender: str,  # noqa: PLR0911
                 invited: Iterable[str], now_ms: int, name_taken: bool,  # one answer per check
                 running: int = 0) -> str | None:
    """Why `sender` may not make `change` (one sentence), or None. `invited` are the agencies the
    query addresses; `name_taken` is True when the directory already has a group of that name;
    `running`: how many groups `sender` runs now (counted for a PROPOSE only)."""
    name, action = change.get("group"), change.get("action")
    if not isinstance(name, str) or not GROUP_NAME.match(name):
        return f"{name!r} is not a group name (upper case, e.g. JIT-ORION)."
    if action not in ACTIONS:
        return f"{action!r} is not a case-group action ({', '.join(ACTIONS)})."
    others = [code for code in invited if code != sender]
    if action == "PROPOSE":
        return _proposal_problem(group, change, others, now_ms=now_ms, name_taken=name_taken, running=running)
    if group is None:
        return f"There is no case group {name} formed on the bus."  # the same words for everyone
    if sender != group.initiator:
        if sender not in group.members:
            return f"There is no case group {name} formed on the bus."
        return f"Only {group.initiator}, who formed {name}, may {str(action).lower()} it."
    if not group.in_force(now_ms):
        return group.ended_why(now_ms)
    return _amendment_problem(group, change, others, now_ms=now_ms)


def _proposal_problem(group: CaseGroup | None, change: Mapping[str, Any], invited: list[str], *,
                      now_ms: int, name_taken: bool, running: int) -> str | None:  # one answer per check
    ends_at = change.get("ends_at")
    if group is not None or name_taken:
        return f"A group named {change.get('group')} already exists on the bus; choose another name."
    if running >= MAX_RUNNING:
        return f"An agency runs at most {MAX_RUNNING} case groups at a time; close one first."
    if not invited:
        return "A proposal invites at least one other agency (envelope.addressing.agencies)."
    if len(invited) + 1 > MAX_MEMBERS:
        return f"A case group has at most {MAX_MEMBERS} members."
    if not isinstance(ends_at, int) or ends_at <= now_ms:
        return "A proposal names its end date (case_group.ends_at), in the future."
    return _term_problem(ends_at, now_ms)


def _term_problem(ends_at: int, now_ms: int) -> str | None:
    if ends_at > now_ms + MAX_TERM_MS:
        return "A case group runs at most two years at a time (case_group.ends_at); extend it later."
    return None


def _amendment_problem(group: CaseGroup, change: Mapping[str, Any], invited: list[str], *,
                       now_ms: int) -> str | None:
    action, ends_at = change.get("action"), change.get("ends_at")
    if action == "ADD":
        fresh = [code for code in invited if code not in group.members]
        if not fresh:
            return "An ADD invites at least one agency that is not a member yet."
        if len(set(group.members) | set(group.invited) | set(fresh)) > MAX_MEMBERS:
            return f"A case group has at most {MAX_MEMBERS} members and invitations."
    elif action == "REMOVE":
        out = change.get("members") or []
        if not out or any(code not in group.members and code not in group.invited for code in out):
            return "A REMOVE names members (or invited agencies) of the group in case_group.members."
        if group.initiator in out:
            return "The initiator cannot remove itself; close the group instead."
    elif action == "EXTEND":
        return _extension_problem(ends_at, now_ms)
    return None


def _extension_problem(ends_at: object, now_ms: int) -> str | None:
    if not isinstance(ends_at, int) or ends_at <= now_ms:
        return "An EXTEND names the new end date (case_group.ends_at), in the future."
    return _term_problem(ends_at, now_ms)


def _logged(group: CaseGroup, at: int, action: str, by: str, agencies: Iterable[str] = (), *,
            message_id: str | None = None, **extra: Any) -> tuple[Mapping[str, Any], ...]:
    entry = {"at": at, "action": action, "by": by, "agencies": sorted(agencies), "message_id": message_id,
             **extra}
    return (*group.history, entry)[-MAX_HISTORY:]


def proposed(change: Mapping[str, Any], env: Mapping[str, Any], invited: Iterable[str], at: int) -> CaseGroup:
    """The group a PROPOSE forms: its initiator is the only member until invitations are accepted."""
    sender, query_id = str(env["originator"]), str(env["message_id"])
    invited = sorted(set(invited) - {sender})
    group = CaseGroup(name=str(change["group"]), initiator=sender, ends_at=int(change["ends_at"]),
                      created_at=at, purpose=env.get("purpose"), legal_basis=env.get("legal_basis"),
                      case_id=env.get("case_id"), members={sender: at},
                      invited=dict.fromkeys(invited, query_id))
    return replace(group, history=_logged(group, at, "PROPOSED", sender, invited, message_id=query_id,
                                          ends_at=group.ends_at))


def changed(group: CaseGroup, change: Mapping[str, Any], env: Mapping[str, Any], invited: Iterable[str],
            at: int) -> tuple[CaseGroup, frozenset[str]]:
    """The group after an initiator's ADD, REMOVE, EXTEND or CLOSE, and the agencies to tell."""
    action, by, query_id = str(change["action"]), str(env["originator"]), str(env["message_id"])
    tell = frozenset(group.members) - {by}
    if action == "ADD":
        fresh = sorted(set(invited) - set(group.members) - {by})
        return replace(group, invited={**group.invited, **dict.fromkeys(fresh, query_id)},
                       left={k: v for k, v in group.left.items() if k not in fresh},
                       history=_logged(group, at, "INVITED", by, fresh, message_id=query_id)), frozenset()
    if action == "REMOVE":
        out = set(change.get("members") or ())
        return replace(group, members={k: v for k, v in group.members.items() if k not in out},
                       invited={k: v for k, v in group.invited.items() if k not in out},
                       left={**group.left, **dict.fromkeys(sorted(out), at)},
                       history=_logged(group, at, "REMOVED", by, out, message_id=query_id)), tell | out
    if action == "EXTEND":
        ends = int(change["ends_at"])
        logged = _logged(group, at, "EXTENDED", by, (), message_id=query_id, ends_at=ends)
        return replace(group, ends_at=ends, history=logged), tell
    return replace(group, status="CLOSED", invited={},
                   history=_logged(group, at, "CLOSED", by, (), message_id=query_id)), tell


def answered(group: CaseGroup, agency: str, query_id: str, *, accepted: bool, at: int,
             reply_id: str) -> CaseGroup | None:
    """The group after an invited agency's answer; None when the answer changes nothing (the
    invitation was withdrawn, already answered, or the group has ended)."""
    if group.invited.get(agency) != query_id or not group.in_force(at):
        return None
    invited = {k: v for k, v in group.invited.items() if k != agency}
    if accepted:
        return replace(group, members={**group.members, agency: at}, invited=invited,
                       history=_logged(group, at, "JOINED", agency, (agency,), message_id=reply_id))
    return replace(group, invited=invited, left={**group.left, agency: at},
                   history=_logged(group, at, "DECLINED", agency, (agency,), message_id=reply_id))


def running_mark(name: str, value: Any) -> tuple[str, bool] | None:
    """The store mark of a group its initiator runs (`<initiator>/<name>` while ACTIVE): the sweep
    for end dates and the per-agency cap read the marks, not every group ever formed."""
    if not isinstance(value, Mapping) or not isinstance(value.get("initiator"), str):
        return None  # a deletion: the group stopped running (and lost its mark) when it ended
    return f"{value['initiator']}/{name}", value.get("status") == "ACTIVE"


def ended(group: CaseGroup, at: int) -> CaseGroup:
    """The group once its end date has passed and its members were told."""
    return replace(group, status="CLOSED", invited={}, history=_logged(group, at, "ENDED", "BUS", ()))
