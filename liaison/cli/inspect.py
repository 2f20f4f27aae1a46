"""`liaison case | trace | deadletter`: what the bus decided, for operators and oversight.

`case` and `trace` answer from a local index of the audit trail (liaison/audit_index.py), which reads
only what was appended since the last question; `--since` / `--until` read only the audit records of
a time window; `--no-index` reads the topics whole. `deadletter` reads `bus.deadletter` (kept 30 days)
whole. Each reads to the end the topics had when the command started, without a consumer group.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from liaison.audit_index import find_case, find_message, find_query_states, index_folder
from liaison.audit_view import (
    EVER,
    Window,
    dead_letters,
    find_dead_letter,
    ms_to_text,
    query_row,
    replay,
)
from liaison.cli.messages import (
    DEFAULT_TIMEOUT_S,
    JsonOpt,
    OneLineCommand,
    OneLineGroup,
    TimeoutOpt,
    bus_settings,
    emit_json,
    message_from,
    not_found,
    run,
    styled,
    table,
    time_ago,
)
from liaison.cli.output import Out, fail
from liaison.core.settings import StatefulSettings
from liaison.sdk.builders import MessageError

Record = dict[str, Any]

_DECISION_COLUMNS = ["decided", "type", "message id", "from", "to", "decision", "reason"]


def _reason(row: Record) -> str:
    text = ": ".join(p for p in (row.get("reason_code"), row.get("reason")) if p)
    if row.get("redactions"):
        text += f" [removed: {', '.join(row['redactions'])}]"
    return escape(text or "-")


def _decision_cells(row: Record) -> list[str]:
    return [ms_to_text(row["decided_at"]), row["message_type"], row["message_id"], row["originator"],
            row["recipient"] or "-", styled(row["decision"]), _reason(row)]


SinceOpt = Annotated[int | None, typer.Option(
    "--since", parser=time_ago, metavar="TIME", show_default=False,
    help="Only decisions from this time on: an ISO 8601 date or time (UTC unless it says), or a "
         "duration back from now (30d, 12h, 90m). Only the audit records of that window are read.")]
UntilOpt = Annotated[int | None, typer.Option(
    "--until", parser=time_ago, metavar="TIME", show_default=False,
    help="Only decisions up to this time (same forms as --since).")]
NoIndexOpt = Annotated[bool, typer.Option(
    "--no-index", help="Read the topics from Kafka instead of the local index of the audit trail "
                       "(the answer must be the same; for checking).")]


def _window(since: int | None, until: int | None) -> Window:
    if since is not None and until is not None and since > until:
        fail(f"--since ({ms_to_text(since)}) is after --until ({ms_to_text(until)})", code=2)
    return Window(since, until)


def _index(settings: StatefulSettings, no_index: bool) -> tuple[Path | None, str]:
    """The index folder (None with --no-index), and what a timeout message adds about it."""
    if no_index:
        return None, ""
    folder = index_folder(settings.state_dir, settings)
    return folder, f" (the index in {folder} keeps what was read: run it again or give a longer --timeout)"


def case(case_id: Annotated[str, typer.Argument(metavar="CASE_ID", help="The case id.")], *,
         since: SinceOpt = None, until: UntilOpt = None, no_index: NoIndexOpt = False,
         timeout: TimeoutOpt = DEFAULT_TIMEOUT_S, json: JsonOpt = False) -> None:
    """The thread of a case: every alert, query and reply in it, who got each and who was refused.

    Example: liaison case CASE-2025-0042 --since 30d
    """
    settings = bus_settings(StatefulSettings)
    window = _window(since, until)
    folder, note = _index(settings, no_index)
    rows = run(lambda: find_case(settings, case_id, folder=folder, window=window),
               doing=f"reading the audit trail of case {case_id}{note}", timeout_s=timeout,
               settings=settings, message=f"reading the audit trail of {case_id}", json=json)
    if not rows:
        not_found(f"no routing decision about case {case_id} on this bus"
                  f"{' in that time' if window != EVER else ''}", json=json)
    table(Out(json=json), f"case {case_id}", _DECISION_COLUMNS, [_decision_cells(r) for r in rows],
                         records=rows)
    if not json:
        query_ids = sorted({r["message_id"] for r in rows if r["message_type"] == "Query"})
        states = run(lambda: find_query_states(settings, query_ids, folder=folder),
                     doing="reading the queries' state", timeout_s=timeout, settings=settings,
                     message="reading bus.queries", json=json)
        if states:
            table(Out(), "queries: deadline and state", _QUERY_COLUMNS,
                  [_query_cells(query_row(s)) for s in states.values()])


def trace(message_id: Annotated[str, typer.Argument(metavar="MESSAGE_ID", help="The message id.")], *,
          since: SinceOpt = None, until: UntilOpt = None, no_index: NoIndexOpt = False,
          timeout: TimeoutOpt = DEFAULT_TIMEOUT_S, json: JsonOpt = False) -> None:
    """Every decision about one message: who got it, who was refused it and why, dead letters, answers.

    Example: liaison trace 1b4e28ba-2fa1-11d2-883f-0016d3cca427 --since 2025-03-01
    """
    settings = bus_settings(StatefulSettings)
    window = _window(since, until)
    folder, note = _index(settings, no_index)
    found = run(lambda: find_message(settings, message_id, folder=folder, window=window),
                doing=f"tracing {message_id}{note}", timeout_s=timeout, settings=settings,
                message=f"tracing {message_id}", json=json)
    if not found.found:
        not_found(f"nothing on this bus about message {message_id} (no decision, no dead letter)"
                  f"{' in that time' if window != EVER else ''}", json=json, empty=found.to_dict())
    if json:
        emit_json(found.to_dict())
        return
    out = Out()
    if found.decisions:
        table(out, f"decisions about {message_id}", _DECISION_COLUMNS,
                  [_decision_cells(r) for r in found.decisions])
    if found.dead_letters:
        table(out, "dead-lettered (nobody received it)", _LETTER_COLUMNS,
                  [_letter_cells(v) for v in found.dead_letters])
    if found.related:
        table(out, "answers and onward copies", _DECISION_COLUMNS,
              [_decision_cells(r) for r in found.related])
    if found.query:
        table(out, "query: deadline and state", _QUERY_COLUMNS, [_query_cells(found.query)])


_QUERY_COLUMNS = ["query", "from", "to", "deadline", "state", "answered by", "overdue"]


def _query_cells(row: Record) -> list[str]:
    return [row["query_id"], row["requester"], ", ".join(row["requested"]), ms_to_text(row["deadline"]),
            styled(row["state"]), ", ".join(row["answered"]) or "-", ", ".join(row["overdue"]) or "-"]


# == dead letters ==================================================================================
deadletter_app = typer.Typer(cls=OneLineGroup, no_args_is_help=True,
                             help="List, inspect and replay what the bus could not accept.")

_LETTER_COLUMNS = ["id", "failed", "service", "from topic", "error", "message id"]


def _letter_cells(view: Record) -> list[str]:
    return [view["dead_letter_id"], ms_to_text(view["failed_at"]), view["service"],
            f"{view['source_topic']}@{view['source_offset']}",
            escape(f"{view['error_code']}: {view['error']}"), view["message_id"] or "-"]


def _public(view: Record) -> Record:
    return {k: v for k, v in view.items() if k != "original"}


@deadletter_app.command("list", cls=OneLineCommand)
def deadletter_list(*, timeout: TimeoutOpt = DEFAULT_TIMEOUT_S, json: JsonOpt = False) -> None:
    """List the dead letters, oldest first, with why each was refused.

    Example: liaison deadletter list --json
    """
    settings = bus_settings()
    views = run(lambda: dead_letters(settings), doing="reading the dead-letter topic", timeout_s=timeout,
                settings=settings, message="reading the dead-letter topic", json=json)
    if not views and not json:
        typer.echo("no dead letters")
        return
    table(Out(json=json), "dead letters", _LETTER_COLUMNS, [_letter_cells(v) for v in views],
                         records=[_public(v) for v in views])


LetterArg = Annotated[str, typer.Argument(metavar="ID",
                                          help="The dead letter's id (or its first 8+ characters).")]


@deadletter_app.command("show", cls=OneLineCommand)
def deadletter_show(letter_id: LetterArg, *, timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
                    json: JsonOpt = False) -> None:
    """Show one dead letter: where it came from, why it was refused, and the original record.

    Example: liaison deadletter show 3f2a9c1e
    """
    settings = bus_settings()
    view, _ = run(lambda: find_dead_letter(settings, letter_id), doing=f"finding dead letter {letter_id}",
                  timeout_s=timeout, settings=settings, message="reading the dead-letter topic", json=json)
    if json:
        emit_json(view)
        return
    rows = [[key, ms_to_text(value) if key == "failed_at" else escape(str(value))]
            for key, value in view.items() if key not in ("original", "original_hex") and value is not None]
    table(Out(), f"dead letter {view['dead_letter_id']}", ["field", "value"], rows)
    if view["original"] is not None:
        typer.echo(f"original {view['message_type']} record (replay it as is, or correct it with --file):")
        emit_json(view["original"])
    elif view["original_hex"] is not None:
        typer.echo(f"original bytes (undecodable), first 64 in hex: {view['original_hex']}")


@deadletter_app.command("replay", cls=OneLineCommand)
def deadletter_replay(
    letter_id: LetterArg, *,
    file: Annotated[Path | None, typer.Option(
        "--file", "-f", help="A corrected record (JSON or YAML, full record or builder fields) to send "
        "instead of the original bytes.", show_default=False)] = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S, json: JsonOpt = False,
) -> None:
    """Send a dead letter's original value (or a corrected record) to its outbox again.

    The router reads it as new input: it is routed, or dead-lettered again with the reason.

    Example: liaison deadletter replay 3f2a9c1e --file corrected.yaml
    """
    settings = bus_settings()

    async def go() -> Any:
        _, letter = await find_dead_letter(settings, letter_id)
        corrected = None
        if file is not None:
            owner = settings.topics.parse_outbox(letter["source_topic"])
            if owner is None:
                raise MessageError(f"dead letter {letter['dead_letter_id']} did not come from an outbox: "
                                   "nothing to correct it for")
            corrected = message_from(owner[0], file, {})
        return await replay(settings, letter, corrected)

    done = run(go, doing=f"replaying dead letter {letter_id}", timeout_s=timeout, settings=settings,
               message=f"replaying dead letter {letter_id}", json=json)
    if json:
        emit_json({"dead_letter_id": done.dead_letter_id, "topic": done.topic, "bytes": done.size,
                   "corrected": done.corrected, "message_id": done.message_id})
        return
    what = f"corrected record {done.message_id}" if done.corrected else "original value"
    typer.echo(f"replayed dead letter {done.dead_letter_id}: {what} ({done.size} bytes) sent to "
               f"{done.topic}; the router will route it or dead-letter it again")
