"""`liaison case-group`: the case groups formed on the bus (bus.casegroups) and the static ones of the
directory, their members and their history."""

from __future__ import annotations

import datetime as dt
import time
from typing import Annotated, Any

import typer
from rich.markup import escape

from liaison.case_groups import CaseGroup
from liaison.cli.messages import (
    DEFAULT_TIMEOUT_S,
    JsonOpt,
    OneLineCommand,
    OneLineGroup,
    TimeoutOpt,
    bus_settings,
    emit_json,
    run,
    table,
)
from liaison.cli.output import Out, fail
from liaison.core.settings import KafkaSettings
from liaison.onboarding import current_directory, read_entries
from liaison.sdk.client import kafka_faults
from liaison.table import CompactedTable

app = typer.Typer(cls=OneLineGroup, no_args_is_help=True,
                  help="Case groups: joint teams formed on the bus by their members, and the directory's.")


async def read_groups(settings: KafkaSettings) -> tuple[list[CaseGroup], list[dict[str, Any]]]:
    """The groups formed on the bus, and the directory's static CASE groups (as entries)."""
    table_ = CompactedTable(settings, settings.topics.casegroups)
    async with kafka_faults(settings, "reading the case groups"):
        try:
            await table_.start(timeout_s=10)
            formed = [CaseGroup.from_value(v) for _, v in sorted(table_.items.items())]
        finally:
            await table_.stop()
    directory = current_directory(await read_entries(settings))
    static = [g.to_entry() for _, g in sorted(directory.groups.items()) if g.kind == "CASE"]
    return formed, static


def _when(ms: int | None) -> str:
    return "-" if ms is None else dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M")


def _status(group: CaseGroup, now: int) -> str:
    if group.status == "CLOSED":
        return "CLOSED"
    return "ACTIVE" if group.in_force(now) else "ENDED"


def _summary(group: CaseGroup, now: int) -> dict[str, Any]:
    return {**group.to_value(), "origin": "bus", "state": _status(group, now)}


@app.command("list", cls=OneLineCommand)
def list_(*, timeout: TimeoutOpt = DEFAULT_TIMEOUT_S, json: JsonOpt = False) -> None:
    """List the case groups: those formed on the bus (members, invitations, end) and the directory's.

    Example: liaison case-group list
    """
    settings = bus_settings()
    formed, static = run(lambda: read_groups(settings), doing="reading the case groups", timeout_s=timeout,
                         settings=settings, message="reading the case groups", json=json)
    now = int(time.time() * 1000)
    rows = [[g.name, "bus", g.initiator, _status(g, now), ", ".join(sorted(g.members)) or "-",
             ", ".join(sorted(g.invited)) or "-", _when(g.ends_at), escape(g.case_id or "-")] for g in formed]
    rows += [[e["name"], "directory", "-", "ACTIVE", ", ".join(e.get("members") or ()) or "-", "-",
              _when(e.get("expires_at")), "-"] for e in static]
    records = [_summary(g, now) for g in formed] + [{**e, "origin": "directory"} for e in static]
    table(Out(json=json), "case groups", ["group", "origin", "initiator", "state", "members", "invited",
                                          "ends", "case"], rows, records=records)


@app.command("show", cls=OneLineCommand)
def show(
    name: Annotated[str, typer.Argument(metavar="GROUP", help="The group's name, e.g. JIT-ORION.")], *,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S, json: JsonOpt = False,
) -> None:
    """Show one case group formed on the bus: its terms, members, invitations and history.

    Example: liaison case-group show JIT-ORION
    """
    settings = bus_settings()
    formed, static = run(lambda: read_groups(settings), doing="reading the case groups", timeout_s=timeout,
                         settings=settings, message="reading the case groups", json=json)
    wanted = name.strip().upper()
    group = next((g for g in formed if g.name == wanted), None)
    if group is None:
        if any(e["name"] == wanted for e in static):
            fail(f"{wanted} is a static case group of the directory (`liaison case-group list` shows its "
                 "members); it has no history on the bus")
        fail(f"no case group {wanted} was formed on the bus (`liaison case-group list` shows them)")
    now = int(time.time() * 1000)
    if json:
        emit_json(_summary(group, now))
        return
    out = Out()
    table(out, group.name, ["field", "value"], [
        ["state", _status(group, now)], ["initiator", group.initiator],
        ["case", escape(group.case_id or "-")],
        ["purpose", escape(group.purpose or "-")], ["legal basis", escape(group.legal_basis or "-")],
        ["formed", _when(group.created_at)], ["ends", _when(group.ends_at)]])
    table(out, "members", ["agency", "since"], [[c, _when(at)] for c, at in sorted(group.members.items())]
          + [[c, "invited"] for c in sorted(group.invited)])
    table(out, "history", ["at", "action", "by", "agencies", "message"],
          [[_when(h.get("at")), h.get("action", "?"), h.get("by", "?"),
            ", ".join(h.get("agencies") or ()) or "-",
            h.get("message_id") or "-"] for h in group.history])
