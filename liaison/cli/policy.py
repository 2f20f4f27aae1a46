"""`liaison policy explain`: what the router would decide for a message, and the rule behind it.

Nothing is sent and no broker is needed: the policy file and the directory file are compiled
here, exactly as the router compiles them, and evaluated with an in-memory routing state.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from liaison.cli.messages import (
    JsonOpt,
    OneLineCommand,
    OneLineGroup,
    build_message,
    emit_json,
    message_type_of,
    read_mapping,
    sender_code,
    styled,
    table,
)
from liaison.cli.output import Out, fail
from liaison.directory import Directory
from liaison.errors import LiaisonError
from liaison.local.paths import REPO_ROOT
from liaison.policy import Explanation, MemoryState, PolicyEngine, load_policy
from liaison.sdk.builders import MessageError

Record = dict[str, Any]

DEFAULT_DIRECTORY = REPO_ROOT / "deploy" / "directory.yaml"
DEFAULT_POLICY = REPO_ROOT / "deploy" / "policy.yaml"

policy_app = typer.Typer(cls=OneLineGroup, no_args_is_help=True,
                         help="Explain the sharing policy without sending anything.")

_OUTCOME_STYLE = {"DELIVER": "DELIVERED", "DENY": "DENIED", "HOLD": "HELD"}


def infer_type(fields: Mapping[str, Any], declared: str | None, where: str) -> str:
    """The message type: `--type`, else the file's `type:` key, else what its fields show."""
    from_file = fields.get("type")
    if declared and from_file and message_type_of(declared) != message_type_of(str(from_file)):
        raise MessageError(f"{where} says type {from_file}, but --type says {declared}")
    if declared or from_file:
        return message_type_of(str(declared or from_file))
    if "question" in fields:
        return "Query"
    if "outcome" in fields:
        return "Reply"
    if {"colour", "color", "action"} & fields.keys():
        return "Alert"
    raise MessageError(f"{where}: which kind of message is it? give --type alert|query|reply, or a "
                       "top-level `type:` key in the file")


def load_message(path: Path, declared: str | None = None, sender: str | None = None) -> tuple[str, Record]:
    """(type, record) from a message file; `sender` is the originator when the file names none."""
    fields = read_mapping(path)
    message_type = infer_type(fields, declared, str(path))
    if sender and "envelope" not in fields and not (fields.get("from") or fields.get("originator")):
        fields["from"] = sender
    return message_type, build_message(message_type, fields)


def explain_message(engine: PolicyEngine, message_type: str, record: Record, *, sender: str | None,
                    earlier: list[tuple[str, Record]], now_ms: int | None = None) -> Explanation:
    """The engine's explanation, after routing `earlier` messages into an in-memory state."""
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    state = MemoryState()
    for before_type, before in earlier:
        env = before["envelope"]
        result = engine.route(before_type, before, outbox_owner=env["originator"], now_ms=now, state=state)
        state.observe(before_type, before, result)
    return engine.explain(message_type, record, outbox_owner=sender, now_ms=now, state=state)


def explanation_dict(explanation: Explanation, record: Record) -> Record:
    """The engine's JSON form, with each recipient's reason in words and the message id."""
    out = explanation.to_dict()
    out["message_id"] = record["envelope"]["message_id"]
    out["rejection_rule"] = explanation.result.rejection.rule if explanation.result.rejection else None
    for item, detail in zip(out["recipients"], explanation.recipients, strict=True):
        item["reason"] = detail.decision.reason
    out["waived"] = [{"recipient": d.recipient, "reason_code": d.reason_code, "reason": d.reason}
                     for d in explanation.result.waived]  # SPOC copies skipped on an Art. 4(2) ground
    return out


@policy_app.command("explain", cls=OneLineCommand)
def explain(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="The message, as JSON or YAML: builder "
                                         "fields (from, to, tlp, question...) or a full record.",
                                         show_default=False)],
    *,
    sender: Annotated[str | None, typer.Option(
        "--as", callback=sender_code, metavar="AGENCY",
        help="Whose outbox it is written to (default: its originator), an agency or a liaison officer; "
        "also its originator when the file names none.")] = None,
    message_type: Annotated[str | None, typer.Option(
        "--type", "-t", metavar="TYPE",
        help="alert, query or reply (default: the file's `type:` key).")] = None,
    directory: Annotated[Path, typer.Option("--directory", help="The directory file.")] = DEFAULT_DIRECTORY,
    policy: Annotated[Path, typer.Option("--policy", help="The policy file.")] = DEFAULT_POLICY,
    after: Annotated[list[Path] | None, typer.Option(
        "--after", metavar="FILE", help="A message routed before it, e.g. the query a reply answers; "
        "repeat, oldest first.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show every rule consulted.")] = False,
    json: JsonOpt = False,
) -> None:
    """Show, per recipient, what the router would decide for a message and the rule behind it.

    Nothing is sent; no broker is needed.

    Example: liaison policy explain query.yaml --as FR-PN --directory deploy/directory.yaml
    """
    try:
        engine = load_policy(policy).compile(Directory.from_file(directory))
        earlier = [load_message(p, None, None) for p in after or ()]
        mtype, record = load_message(file, message_type, sender)
        explanation = explain_message(engine, mtype, record, sender=sender, earlier=earlier)
    except LiaisonError as exc:
        fail(str(exc), code=2)
    data = explanation_dict(explanation, record)
    if json:
        emit_json(data)
        return
    _print(Out(), explanation, data, verbose=verbose)


def _print(out: Out, explanation: Explanation, data: Record, *, verbose: bool) -> None:
    mid = data["message_id"]
    typer.echo(f"{explanation.message_type} {mid}: nothing sent (policy explain)")
    rejection = explanation.result.rejection
    if rejection is not None:
        typer.echo(f"REFUSED WHOLE: {rejection.code}: {rejection.reason} (rule {rejection.rule}); it "
                   "would go to the dead-letter topic and nobody would receive it")
        if rejection.code == "UNKNOWN_CORRELATION":
            typer.echo("hint: give the message it answers with --after FILE")
        if verbose:
            _checks(out, explanation)
        return
    if not explanation.recipients:
        typer.echo("nobody would receive it: the addressing reaches no agency")
        return
    rows = []
    for item in data["recipients"]:
        reason = ": ".join(p for p in (item["reason_code"], item["reason"]) if p) or "-"
        if item["redactions"]:
            reason += f" [removed: {', '.join(item['redactions'])}]"
        decision = "REDACTED" if item["redactions"] else _OUTCOME_STYLE[item["outcome"]]
        rows.append([item["recipient"], escape(item["via"]), styled(decision),
                     item["rule"], escape(reason)])
    table(out, "decisions", ["recipient", "reached via", "decision", "rule", "reason"], rows)
    if explanation.result.notify_hub:
        typer.echo(f"hubs told: {', '.join(explanation.result.notify_hub)}")
    for waived in data["waived"]:
        typer.echo(f"copy waived: {waived['recipient']} - {waived['reason_code']}: {waived['reason']}")
    if verbose:
        _checks(out, explanation)


def _checks(out: Out, explanation: Explanation) -> None:
    """Every rule consulted: first those about the whole message, then per recipient."""
    def reason(code: str | None, text: str | None) -> str:
        return escape(": ".join(p for p in (code, text) if p) or "-")

    rows = [["(message)", c.rule, c.verdict, reason(c.reason_code, c.reason)]
            for c in explanation.message_checks]
    rows += [[r.recipient, c.rule, c.verdict, reason(c.reason_code, c.reason)]
             for r in explanation.recipients for c in r.checks]
    table(out, "rules consulted", ["recipient", "rule", "verdict", "reason"], rows)
