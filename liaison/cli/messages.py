"""`liaison send | inbox | receipts`: an agency operator's messages, and what the bus said about them.

This module also holds what every bus command of the CLI shares: one-line usage errors, the
deadline and error handling around the asyncio work, progress on stderr, and reading a message
from flags or from a JSON / YAML file.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json as jsonlib
import logging
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar, overload

import structlog
import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperCommand, TyperGroup

from liaison.audit_view import Item, TopicScan, ms_to_text
from liaison.cli.output import Out, fail
from liaison.core.settings import KafkaSettings, S, load
from liaison.directory import OFFICER_CODE, check_agency_code, to_ms
from liaison.errors import ConfigError, LiaisonError, RegistryError
from liaison.schemas import MESSAGE_TYPES
from liaison.sdk import builders
from liaison.sdk.builders import MessageError
from liaison.sdk.client import AgencyClient, message_types
from liaison.security.acls import agency_group_prefix

try:
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
except ImportError:  # typer before 0.23 used click itself
    from click.exceptions import NoArgsIsHelpError, UsageError  # type: ignore[import-not-found,no-redef]

T = TypeVar("T")
Record = dict[str, Any]

DEFAULT_TIMEOUT_S = 10.0


# == shared by every bus command ===================================================================
@contextlib.contextmanager
def _one_line_usage() -> Iterator[None]:
    try:
        yield
    except NoArgsIsHelpError:
        raise
    except UsageError as exc:
        names = []
        ctx = exc.ctx
        while ctx is not None and ctx.parent is not None:  # the root's name depends on how it was run
            names.append(ctx.info_name or "")
            ctx = ctx.parent
        sub = " ".join(reversed(names))
        fail(f"{sub + ': ' if sub else ''}{exc.format_message()} (see `liaison {sub} --help`)".replace(
            "liaison  --help", "liaison --help"), code=2)


class OneLineCommand(TyperCommand):
    """A command whose wrong arguments are reported in one line on stderr (exit code 2)."""

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None,
                     **extra: Any) -> Any:
        with _one_line_usage():
            return super().make_context(info_name, args, parent=parent, **extra)


class OneLineGroup(TyperGroup):
    """A command group whose wrong arguments and unknown sub-commands are reported in one line."""

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None,
                     **extra: Any) -> Any:
        with _one_line_usage():
            return super().make_context(info_name, args, parent=parent, **extra)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        with _one_line_usage():
            return super().resolve_command(ctx, args)


def agency_code(value: str | None) -> str | None:
    """Typer callback: an agency code in upper case, or a usage error saying what is wrong."""
    if value is None:
        return None
    try:
        return check_agency_code(value.strip().upper(), "agency")
    except ConfigError as exc:
        raise typer.BadParameter(str(exc).removeprefix("agency: ")) from None


def sender_code(value: str | None) -> str | None:
    """Typer callback: an agency code, or a liaison officer's code (FR-PN-BOGOTA), in upper case."""
    if value is not None and OFFICER_CODE.match(value.strip().upper()):
        return value.strip().upper()
    return agency_code(value)


def agency_codes(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [code for v in values for part in v.split(",") if part.strip()
            if (code := agency_code(part)) is not None]


JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", min=0.1, metavar="SECONDS",
                                           help="Give up after this long (the broker or registry is down).")]
AgencyArg = Annotated[str, typer.Argument(callback=agency_code, metavar="AGENCY",
                                          help="Agency code, e.g. FR-PN.", show_default=False)]


@overload
def bus_settings() -> KafkaSettings: ...
@overload
def bus_settings(cls: type[S]) -> S: ...
def bus_settings(cls: type[KafkaSettings] = KafkaSettings) -> KafkaSettings:
    """Settings from LIAISON_* variables, or one line saying which one is wrong; `cls`: settings with
    more than the connection (`StatefulSettings`: where the CLI keeps its index).

    With no credential given, the operator acts as the local stack's admin when that stack runs
    secured (its credential file is there), so `make demo` is followed by commands that work.
    """
    from liaison.local.stack import local_admin_credentials  # noqa: PLC0415  # keeps --help fast

    try:
        return load(cls, credentials=local_admin_credentials())
    except ConfigError as exc:
        fail(str(exc), code=2)


def _quiet_libraries() -> None:
    """aiokafka logs every refused connection; the CLI reports faults itself, in one line."""
    for name in ("aiokafka", "kafka"):
        logger = logging.getLogger(name)
        if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
            logger.addHandler(logging.NullHandler())
        logger.propagate = False
    if not structlog.is_configured():  # library warnings go to stderr, never into --json output
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr),
                            wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


@contextlib.contextmanager
def progress(message: str | None, *, json: bool = False) -> Iterator[None]:
    """A spinner on stderr while `message` is under way, on a terminal only."""
    if message is None or json or not sys.stderr.isatty():
        yield
        return
    with Console(stderr=True).status(message):
        yield


def run(work: Callable[[], Awaitable[T]], *, doing: str, timeout_s: float | None,
        settings: KafkaSettings | None = None, message: str | None = None, json: bool = False) -> T:
    """Run the asyncio part of a command by a deadline; any fault becomes one line and exit 1."""
    _quiet_libraries()

    async def bounded() -> T:
        if timeout_s is None:
            return await work()
        async with asyncio.timeout(timeout_s):
            return await work()

    try:
        with progress(message, json=json):
            return asyncio.run(bounded())
    except RegistryError as exc:
        hint = " - check LIAISON_REGISTRY_URL, or start the bus with `liaison up`" if exc.status == 0 else ""
        fail(f"{exc}{hint}")
    except LiaisonError as exc:
        fail(str(exc))
    except TimeoutError:
        where = f" - is the bus up at {settings.bootstrap_servers}?" if settings else ""
        fail(f"{doing}: not done within {timeout_s:g} s (--timeout){where}")
    except KeyboardInterrupt:
        raise SystemExit(130) from None


_TEXT = frozenset({"reason", "content", "error", "name", "value", "groups", "clearances", "reached via"})
"""Free-text columns: they take the width left and wrap; the others (ids, codes, times) stay whole."""


def table(out: Out, title: str, columns: list[str], rows: list[list[str]],
          *, records: list[Any] | None = None) -> None:
    """`Out.table`, except that ids, codes and times stay whole on a narrow terminal; text wraps."""
    if out.json:
        out.table(title, columns, rows, records=records)
        return
    shown = Table(title=title if out.tty else None, box=None, show_edge=out.tty,
                  header_style="bold" if out.tty else "")
    for col in columns:
        if col in _TEXT:
            shown.add_column(col, ratio=1, min_width=12, overflow="fold")
        else:
            shown.add_column(col, no_wrap=True)
    for row in rows:
        shown.add_row(*row)
    out.console.print(shown)


def emit_json(value: Any) -> None:
    typer.echo(jsonlib.dumps(value, default=_json_default, ensure_ascii=False))


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return str(value)


def not_found(message: str, *, json: bool, empty: Any = ()) -> NoReturn:
    """Nothing matched: an empty JSON answer for scripts, one line on stderr, exit 1."""
    if json:
        emit_json(list(empty) if isinstance(empty, tuple) else empty)
    fail(message)


# == reading a message from a file or from flags ===================================================
_COMMON = {
    "from": "originator", "originator": "originator", "to": "to", "agencies": "to",
    "groups": "groups", "group": "groups", "broadcast": "broadcast", "case": "case_id",
    "case_id": "case_id", "answers": "correlation_id", "correlation_id": "correlation_id",
    "tlp": "tlp", "handling": "handling", "handling_codes": "handling", "handling_note": "handling_note",
    "restricted": "restricted", "categories": "categories", "data_categories": "categories",
    "priority": "priority", "purpose": "purpose", "legal_basis": "legal_basis", "language": "language",
    "derived_from": "derived_from", "expires": "expires_at", "expires_at": "expires_at",
    "message_id": "message_id", "trace_id": "trace_id", "officer": "officer",
    "spoc_copy_waiver": "spoc_copy_waiver",
}
_BODY = {
    "Alert": {"kind", "colour", "color", "action", "reference", "subject", "status", "offence",
              "sensitivity", "description", "valid_until"},
    "Query": {"kind", "question", "subject", "criteria", "reference", "accessibility", "urgency_ground",
              "deadline", "case_group"},
    "Reply": {"outcome", "refusal_ground", "reference", "data_owner", "subject", "information", "location",
              "confirmation"},
}
_LISTS = {"to", "groups", "handling", "restricted", "categories", "sensitivity"}
_TIMES = {"expires_at", "deadline", "valid_until"}
_RELATIVE = re.compile(r"^\+?(\d+(?:\.\d+)?)\s*([smhd])$")


def _delay_ms(value: Any) -> int | None:
    """Milliseconds of a delay such as 30m, 48h or 7d; None when `value` is not one."""
    if not isinstance(value, str) or not (m := _RELATIVE.match(value.strip().lower())):
        return None
    return int(float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)] * 1000)


def parse_time(value: Any, where: str) -> int | None:
    """Epoch ms from ms, an ISO 8601 time (UTC unless it says), or a delay from now: 30m, 48h, 7d."""
    if (delay := _delay_ms(value)) is not None:
        return int(time.time() * 1000) + delay
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    try:
        return to_ms(value, where)
    except ConfigError:
        raise MessageError(f"{where}: {value!r} is not a time: give ISO 8601 (2025-03-01T12:00), "
                           "epoch milliseconds, or a delay such as 48h") from None


def time_ago(value: str) -> int:
    """Typer parser of --since / --until: epoch ms of an ISO 8601 date or time (UTC unless it says),
    or of a duration back from now (30d, 12h, 90m)."""
    if (delay := _delay_ms(value)) is not None:
        return int(time.time() * 1000) - delay
    try:
        found = to_ms(value.strip(), "")
    except ConfigError:
        found = None
    if found is None:
        raise typer.BadParameter(f"{value!r} is not a time: give an ISO 8601 date or time "
                                 "(2025-03-01, 2025-03-01T12:00Z) or a duration back from now (30d, 12h)")
    return found


def message_type_of(name: str) -> str:
    return message_types([name])[0]


def read_mapping(path: Path) -> Record:
    """A JSON or YAML file holding one mapping."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        raw = jsonlib.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: not valid {kind}: {where}{problem}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must hold one message as a mapping (keys such as from, to, question)")
    return raw


def _as_list(value: Any, key: str) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list | tuple):
        return list(value)
    raise MessageError(f"{key} must be a list or a comma-separated string, not {value!r}")


def _subject(value: Any) -> Record | None:
    if value is None:
        return None
    if isinstance(value, str):
        return builders.subject(value, kind="OTHER")
    if not isinstance(value, dict) or "summary" not in value:
        raise MessageError("subject is a summary text, or a mapping with a summary (and optionally "
                           "kind, person, identifiers, biometrics)")
    extra = set(value) - {"summary", "kind", "person", "identifiers", "biometrics"}
    if extra:
        raise MessageError(f"subject: unknown key(s) {', '.join(sorted(extra))}")
    return builders.subject(str(value["summary"]), kind=str(value.get("kind", "PERSON")).upper(),
                            person=value.get("person"), identifiers=value.get("identifiers") or (),
                            biometrics=value.get("biometrics"))


def build_message(message_type: str, fields: Mapping[str, Any]) -> Record:
    """A complete record from a full record (`envelope: ...`) or from builder fields.

    Builder fields are those of the `liaison send` flags (from, to, case, tlp, question, ...), as
    in `liaison.sdk.envelope` / `query` / `alert` / `reply`; unknown keys are refused by name.
    """
    given = {str(k).replace("-", "_"): v for k, v in fields.items() if k != "type"}
    if "envelope" in given:
        return _complete_record(given)
    env_args, body = _split_fields(message_type, given)
    if "originator" not in env_args:
        raise MessageError("who sends it? give --from AGENCY (or `from:` in the file)")
    if message_type == "Reply" and "correlation_id" not in env_args:
        raise MessageError("a reply names the message it answers: --answers MESSAGE_ID")
    env = builders.envelope(str(env_args.pop("originator")), **env_args)
    if "subject" in body:
        body["subj"] = _subject(body.pop("subject"))
    if message_type == "Alert":
        return builders.alert(env, **body)
    if message_type == "Query":
        if "question" not in body:
            raise MessageError("a query asks something: --question TEXT")
        if "criteria" in body:
            body["criteria"] = _criteria(body["criteria"])
        if "case_group" in body:
            body["case_group"] = _case_group(body["case_group"])
        return builders.query(env, str(body.pop("question")), **body)
    if "outcome" not in body:
        raise MessageError("a reply has an outcome: --outcome HIT|NO_HIT|PARTIAL|REFUSED|FLAG|GRANTED")
    if "confirmation" in body:
        body["confirmation"] = _confirmation(body["confirmation"])
    return builders.reply(env, str(body.pop("outcome")), **body)


def _case_group(value: Any) -> Record:
    """`case_group: {group: JIT-X, action: PROPOSE, ends_at: 180d, members: [..]}`."""
    if not isinstance(value, dict) or not {"group", "action"} <= set(value):
        raise MessageError("case_group is a mapping with group and action (PROPOSE, ADD, REMOVE, EXTEND, "
                           "CLOSE), and ends_at for PROPOSE and EXTEND")
    if extra := sorted(set(value) - {"group", "action", "ends_at", "members"}):
        raise MessageError(f"case_group: unknown key(s) {', '.join(extra)}")
    ends = value.get("ends_at")
    ends_at = parse_time(ends, "case_group.ends_at") if ends is not None else None
    return builders.case_group_change(str(value["group"]), str(value["action"]), ends_at=ends_at,
                                      members=_as_list(value.get("members"), "case_group.members"))


def _confirmation(value: Any) -> Record:
    """`confirmation: {verified_by: "KHK Weber", confirmed: true, note: ...}`."""
    if not isinstance(value, dict) or "verified_by" not in value:
        raise MessageError("confirmation is a mapping with verified_by (and confirmed, note)")
    if extra := sorted(set(value) - {"verified_by", "confirmed", "note"}):
        raise MessageError(f"confirmation: unknown key(s) {', '.join(extra)}")
    confirmed = value.get("confirmed", True)
    if not isinstance(confirmed, bool):
        raise MessageError("confirmation.confirmed is true or false")
    return builders.match_confirmation(str(value["verified_by"]), confirmed=confirmed, note=value.get("note"))


def _split_fields(message_type: str, fields: Mapping[str, Any]) -> tuple[Record, Record]:
    """(envelope builder arguments, body builder arguments), lists and times parsed."""
    allowed = set(_COMMON) | _BODY[message_type]
    if unknown := sorted(set(fields) - allowed):
        raise MessageError(f"unknown field(s) for a {message_type}: {', '.join(unknown)} "
                           f"(allowed: {', '.join(sorted(allowed))})")
    env_args: Record = {}
    body: Record = {}
    for key, raw in fields.items():
        if raw is None:
            continue
        env_name = _COMMON.get(key) if key not in _BODY[message_type] else None
        name = env_name or ("colour" if key == "color" else key)
        value = _as_list(raw, key) if name in _LISTS else raw
        value = parse_time(value, key) if name in _TIMES else value
        (env_args if env_name is not None else body)[name] = value
    return env_args, body


def _criteria(value: Any) -> dict[str, str]:
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    out = {}
    for item in _as_list(value, "criteria"):
        key, sep, val = str(item).partition("=")
        if not sep:
            raise MessageError(f"criterion {item!r} is not KEY=VALUE")
        out[key.strip()] = val.strip()
    return out


def _complete_record(fields: Record) -> Record:
    """A full record as given, with the envelope's id and creation time filled in when missing."""
    record = copy.deepcopy(fields)
    env = record["envelope"]
    if not isinstance(env, dict):
        raise MessageError("envelope must be a mapping")
    env.setdefault("message_id", str(uuid.uuid4()))
    env.setdefault("created_at", builders.now_ms())
    for key in ("created_at", "expires_at"):
        if isinstance(env.get(key), str):
            env[key] = parse_time(env[key], f"envelope.{key}")
    for key in ("deadline", "valid_from", "valid_until"):
        if isinstance(record.get(key), str):
            record[key] = parse_time(record[key], key)
    return record


def message_from(message_type: str, file: Path | None, flags: Mapping[str, Any]) -> Record:
    """The record to send: the file's fields overridden by the flags given."""
    given = {k: v for k, v in flags.items() if v not in (None, [], False)}
    base: Record = {}
    if file is not None:
        base = read_mapping(file)
        declared = base.get("type")
        if declared is not None and message_type_of(str(declared)) != message_type:
            raise MessageError(f"{file} says type {declared}, but this command sends {message_type} messages")
        if "envelope" in base and given:
            raise MessageError(f"{file} holds a full record; change it there rather than with "
                               f"{', '.join('--' + k.replace('_', '-') for k in given)}")
    return build_message(message_type, {**base, **given})


# == send ==========================================================================================
send_app = typer.Typer(cls=OneLineGroup, no_args_is_help=True,
                       help="Send an alert, a query or a reply from an agency's outbox.")

FileOpt = Annotated[Path | None, typer.Option(
    "--file", "-f", help="The message as JSON or YAML: builder fields (from, to, case, question...) "
    "or a full record with its envelope. Flags given too override its fields.", show_default=False)]
FromOpt = Annotated[str | None, typer.Option("--from", callback=agency_code, metavar="AGENCY",
                                             help="The sending agency (its outbox is used).")]
ToOpt = Annotated[list[str] | None, typer.Option("--to", callback=agency_codes, metavar="AGENCY",
                                                 help="An addressee; repeat or comma-separate.")]
GroupsOpt = Annotated[list[str] | None, typer.Option("--group", metavar="GROUP",
                                                     help="An addressed group (EU, JIT-ORION...).")]
BroadcastOpt = Annotated[bool, typer.Option("--broadcast", help="Address every active agency.")]
CaseOpt = Annotated[str | None, typer.Option("--case", help="Case id (also the partition key).")]
TlpOpt = Annotated[str | None, typer.Option("--tlp",
                                            help="RED, AMBER_STRICT, AMBER (default), GREEN, CLEAR.")]
HandlingOpt = Annotated[list[str] | None, typer.Option("--handling", metavar="CODE", help="H0..H3; repeat.")]
HandlingNoteOpt = Annotated[str | None, typer.Option("--handling-note", help="The restriction text of H3.")]
RestrictedOpt = Annotated[list[str] | None, typer.Option(
    "--restricted", metavar="AGENCY|CC", help="Never deliver to this agency or country; repeat.")]
CategoryOpt = Annotated[list[str] | None, typer.Option("--category", metavar="CATEGORY",
                                                       help="Data category (PERSONAL, DNA...); repeat.")]
PriorityOpt = Annotated[str | None, typer.Option("--priority", help="LOW, NORMAL, HIGH, URGENT.")]
PurposeOpt = Annotated[str | None, typer.Option("--purpose", help="Purpose of the exchange.")]
LegalOpt = Annotated[str | None, typer.Option("--legal-basis", help="Legal basis of the exchange.")]
DerivedOpt = Annotated[str | None, typer.Option("--derived-from", metavar="MESSAGE_ID",
                                                help="The message whose content this passes on.")]
ExpiresOpt = Annotated[str | None, typer.Option("--expires", metavar="TIME",
                                                help="ISO 8601, epoch ms, or a delay such as 7d.")]
WaitOpt = Annotated[bool, typer.Option("--wait", help="Wait for the router's receipts and print them.")]
SubjectOpt = Annotated[str | None, typer.Option("--subject", help="Who or what it is about, in one line.")]
ReferenceOpt = Annotated[str | None, typer.Option("--reference", help="Your own reference.")]


def _envelope_flags(*, sender: str | None, to: list[str] | None, groups: list[str] | None,
                    broadcast: bool, case: str | None, tlp: str | None, handling: list[str] | None,
                    handling_note: str | None, restricted: list[str] | None, categories: list[str] | None,
                    priority: str | None, purpose: str | None, legal_basis: str | None,
                    derived_from: str | None, expires: str | None) -> Record:
    return {"from": sender, "to": to, "groups": groups, "broadcast": broadcast, "case": case, "tlp": tlp,
            "handling": handling, "handling_note": handling_note, "restricted": restricted,
            "categories": categories, "priority": priority, "purpose": purpose,
            "legal_basis": legal_basis, "derived_from": derived_from, "expires": expires}


def _send(message_type: str, file: Path | None, flags: Record, *, wait: bool, timeout: float,
          json: bool) -> None:
    settings = bus_settings()
    try:
        record = message_from(message_type, file, flags)
    except LiaisonError as exc:
        fail(str(exc), code=2)
    env = record["envelope"]
    sender = str(env.get("originator"))

    async def go() -> list[Record]:
        async with AgencyClient(settings, sender) as client:
            if not wait:
                await client.send(message_type, record)
                return []
            return await client.send_and_track(message_type, record, timeout_s=max(0.5, timeout - 1))

    receipts = run(go, doing=f"sending {message_type} from {sender}", timeout_s=timeout,
                   settings=settings, message=f"sending {message_type} from {sender}", json=json)
    topic = settings.topics.outbox(message_type, sender)
    if json:
        emit_json({"message_id": env["message_id"], "message_type": message_type, "topic": topic,
                   "case_id": env.get("case_id"), "receipts": [_receipt_row(r) for r in receipts]})
    else:
        case = f" (case {env['case_id']})" if env.get("case_id") else ""
        typer.echo(f"sent {message_type} {env['message_id']}{case} to {topic}")
        if receipts:
            _receipts_table(Out(), receipts)
    if wait and not receipts:
        typer.echo(f"liaison: no receipt within {timeout:g} s: is the router running? Follow it with "
                   f"`liaison trace {env['message_id']}`", err=True)


@send_app.command("alert", cls=OneLineCommand)
def send_alert(
    *, file: FileOpt = None, sender: FromOpt = None, to: ToOpt = None, groups: GroupsOpt = None,
    broadcast: BroadcastOpt = False, case: CaseOpt = None, tlp: TlpOpt = None, handling: HandlingOpt = None,
    handling_note: HandlingNoteOpt = None, restricted: RestrictedOpt = None, categories: CategoryOpt = None,
    priority: PriorityOpt = None, purpose: PurposeOpt = None, legal_basis: LegalOpt = None,
    derived_from: DerivedOpt = None, expires: ExpiresOpt = None,
    kind: Annotated[str | None, typer.Option("--kind", help="DIFFUSION (default) or NOTICE.")] = None,
    colour: Annotated[str | None, typer.Option("--colour", help="RED, YELLOW, BLUE (default)...")] = None,
    action: Annotated[str | None, typer.Option("--action", help="ARREST, LOCATE (default)...")] = None,
    subject: SubjectOpt = None, reference: ReferenceOpt = None,
    description: Annotated[str | None, typer.Option("--description", help="Free text.")] = None,
    offence: Annotated[str | None, typer.Option("--offence", help="The offence concerned.")] = None,
    wait: WaitOpt = False, timeout: TimeoutOpt = DEFAULT_TIMEOUT_S, json: JsonOpt = False,
) -> None:
    """Send an alert (a diffusion or a notice) from the agency's outbox.

    Example: liaison send alert --from FR-PN --to DE-BKA --case CASE-1 --subject "J. Doe, born 1980" --wait
    """
    flags = _envelope_flags(sender=sender, to=to, groups=groups, broadcast=broadcast, case=case, tlp=tlp,
                            handling=handling, handling_note=handling_note, restricted=restricted,
                            categories=categories, priority=priority, purpose=purpose,
                            legal_basis=legal_basis, derived_from=derived_from, expires=expires)
    flags.update(kind=kind, colour=colour, action=action, subject=subject, reference=reference,
                 description=description, offence=offence)
    _send("Alert", file, flags, wait=wait, timeout=timeout, json=json)


@send_app.command("query", cls=OneLineCommand)
def send_query(
    *, file: FileOpt = None, sender: FromOpt = None, to: ToOpt = None, groups: GroupsOpt = None,
    broadcast: BroadcastOpt = False, case: CaseOpt = None, tlp: TlpOpt = None, handling: HandlingOpt = None,
    handling_note: HandlingNoteOpt = None, restricted: RestrictedOpt = None, categories: CategoryOpt = None,
    priority: PriorityOpt = None, purpose: PurposeOpt = None, legal_basis: LegalOpt = None,
    derived_from: DerivedOpt = None, expires: ExpiresOpt = None,
    question: Annotated[str | None, typer.Option("--question", help="What you ask.")] = None,
    kind: Annotated[str | None, typer.Option(
        "--kind", help="INFORMATION (default), HIT_CHECK, DATA_REQUEST, CONSENT.")] = None,
    deadline: Annotated[str | None, typer.Option(
        "--deadline", metavar="TIME", help="When the answer is due: ISO 8601, epoch ms, or 8h.")] = None,
    urgency_ground: Annotated[str | None, typer.Option("--urgency-ground",
                                                       help="Needed with --priority URGENT.")] = None,
    accessibility: Annotated[str | None, typer.Option(
        "--accessibility", help="DIRECT or INDIRECT (default): sets an urgent query's deadline.")] = None,
    criteria: Annotated[list[str] | None, typer.Option("--criterion", metavar="KEY=VALUE",
                                                       help="A search criterion; repeat.")] = None,
    subject: SubjectOpt = None, reference: ReferenceOpt = None,
    wait: WaitOpt = False, timeout: TimeoutOpt = DEFAULT_TIMEOUT_S, json: JsonOpt = False,
) -> None:
    """Send a query (a request for information) from the agency's outbox.

    Example: liaison send query --from FR-PN --to DE-BKA --case CASE-1 --tlp AMBER --question "Known to you?"
    """
    flags = _envelope_flags(sender=sender, to=to, groups=groups, broadcast=broadcast, case=case, tlp=tlp,
                            handling=handling, handling_note=handling_note, restricted=restricted,
                            categories=categories, priority=priority, purpose=purpose,
                            legal_basis=legal_basis, derived_from=derived_from, expires=expires)
    flags.update(question=question, kind=kind, deadline=deadline, urgency_ground=urgency_ground,
                 accessibility=accessibility, criteria=criteria, subject=subject, reference=reference)
    _send("Query", file, flags, wait=wait, timeout=timeout, json=json)


@send_app.command("reply", cls=OneLineCommand)
def send_reply(
    *, file: FileOpt = None, sender: FromOpt = None,
    answers: Annotated[str | None, typer.Option("--answers", metavar="MESSAGE_ID",
                                                help="The query or alert this answers.")] = None,
    case: CaseOpt = None, tlp: TlpOpt = None, handling: HandlingOpt = None,
    handling_note: HandlingNoteOpt = None, restricted: RestrictedOpt = None, categories: CategoryOpt = None,
    priority: PriorityOpt = None, purpose: PurposeOpt = None, legal_basis: LegalOpt = None,
    derived_from: DerivedOpt = None, expires: ExpiresOpt = None,
    outcome: Annotated[str | None, typer.Option(
        "--outcome", help="HIT, NO_HIT, PARTIAL, REFUSED, FLAG, GRANTED.")] = None,
    information: Annotated[str | None, typer.Option("--information", help="The answer.")] = None,
    refusal_ground: Annotated[str | None, typer.Option("--refusal-ground",
                                                       help="Needed with --outcome REFUSED.")] = None,
    location: Annotated[str | None, typer.Option("--location", help="Where, for a sighting.")] = None,
    subject: SubjectOpt = None, reference: ReferenceOpt = None,
    wait: WaitOpt = False, timeout: TimeoutOpt = DEFAULT_TIMEOUT_S, json: JsonOpt = False,
) -> None:
    """Send a reply to a query or an alert; the bus delivers it to the asker only.

    Example: liaison send reply --from DE-BKA --answers 1b4e28ba-2fa1-11d2-883f-0016d3cca427 --outcome NO_HIT
    """
    flags = _envelope_flags(sender=sender, to=None, groups=None, broadcast=False, case=case, tlp=tlp,
                            handling=handling, handling_note=handling_note, restricted=restricted,
                            categories=categories, priority=priority, purpose=purpose,
                            legal_basis=legal_basis, derived_from=derived_from, expires=expires)
    flags.update(answers=answers, outcome=outcome, information=information, refusal_ground=refusal_ground,
                 location=location, subject=subject, reference=reference)
    _send("Reply", file, flags, wait=wait, timeout=timeout, json=json)


# == inbox and receipts ============================================================================
_DECISION_STYLE = {"DELIVERED": "green", "REDACTED": "yellow", "DENIED": "red", "HELD": "yellow",
                   "HELD_FOR_REVIEW": "yellow", "REJECTED": "red", "OVERDUE": "red", "FLAGGED": "yellow"}


def styled(value: str | None) -> str:
    """A decision or receipt kind, coloured on a terminal (rich drops the colour elsewhere)."""
    text = escape(value or "-")
    style = _DECISION_STYLE.get(value or "")
    return f"[{style}]{text}[/{style}]" if style else text


def summary_of(message_type: str, record: Record) -> str:
    """One line about a message's content, for tables."""
    if message_type == "Alert":
        subject = (record.get("subject") or {}).get("summary") or ""
        return f"{record['kind']} {record['colour']} {record['action']}: {subject}"
    if message_type == "Query":
        return f"{record['kind']}: {record['question']}"
    if message_type == "Reply":
        detail = record.get("information") or record.get("refusal_ground") or ""
        return f"{record['outcome']}" + (f": {detail}" if detail else "")
    return ""


def _message_row(message_type: str, record: Record) -> list[str]:
    env = record["envelope"]
    return [ms_to_text(env["created_at"]), message_type, env["message_id"], env.get("case_id") or "-",
            env["originator"], env["tlp"], escape(summary_of(message_type, record))]


_MESSAGE_COLUMNS = ["created", "type", "message id", "case", "from", "tlp", "content"]


def _receipt_row(receipt: Record) -> Record:
    env = receipt["envelope"]
    return {"created_at": env["created_at"], "kind": receipt["kind"], "message_type": receipt["message_type"],
            "about": env.get("correlation_id"), "case_id": env.get("case_id"),
            "recipient": receipt.get("recipient"), "reason_code": receipt.get("reason_code"),
            "reason": receipt.get("reason"), "deadline": receipt.get("deadline"),
            "from": env["originator"]}


_RECEIPT_COLUMNS = ["created", "kind", "type", "about message", "recipient", "reason"]


def _receipt_cells(row: Record) -> list[str]:
    reason = ": ".join(p for p in (row["reason_code"], row["reason"]) if p) or "-"
    return [ms_to_text(row["created_at"]), styled(row["kind"]), row["message_type"], row["about"] or "-",
            row["recipient"] or "-", escape(reason)]


def _receipts_table(out: Out, receipts: list[Record]) -> None:
    rows = [_receipt_row(r) for r in receipts]
    table(out, "receipts", _RECEIPT_COLUMNS, [_receipt_cells(r) for r in rows], records=rows)


class _Stream:
    """Prints items as they come (`--follow`): JSON lines, or aligned rows on a terminal."""

    def __init__(self, *, json: bool, columns: list[str]) -> None:
        self.json = json
        self.console = Out().console
        self.columns = columns
        self.header_done = False

    def row(self, cells: list[str], record: Any) -> None:
        if self.json:
            emit_json(record)
            return
        if not self.header_done:
            self.console.print("[bold]" + "  ".join(escape(c) for c in self.columns) + "[/bold]")
            self.header_done = True
        self.console.print("  ".join(cells), soft_wrap=True)


def _item_json(item: Item) -> Record:
    return {"type": item.type, "topic": item.topic, "partition": item.partition, "offset": item.offset,
            "record": item.record, "error": item.error}


InboxTypeOpt = Annotated[list[str] | None, typer.Option(
    "--type", "-t", metavar="TYPE", help="alert, query or reply; repeat (default: all three).")]
FollowOpt = Annotated[bool, typer.Option("--follow", "-F", help="Keep printing new ones until Ctrl-C.")]
GroupIdOpt = Annotated[str | None, typer.Option(
    "--group", metavar="NAME", help="Read as consumer group <AGENCY>.<NAME> and commit what was printed "
    "(default: read everything, commit nothing).")]


def _types(values: list[str] | None) -> list[str]:
    try:
        return message_types(values or MESSAGE_TYPES)
    except MessageError as exc:
        fail(str(exc), code=2)


def inbox(agency: AgencyArg, *, types: InboxTypeOpt = None, follow: FollowOpt = False,
          group: GroupIdOpt = None, timeout: TimeoutOpt = DEFAULT_TIMEOUT_S, json: JsonOpt = False) -> None:
    """List what was delivered to an agency: alerts, queries and replies, oldest first.

    Without --group it reads from the beginning and commits nothing; with --group it reads as that
    consumer group and commits what it printed. --json prints a JSON array (JSON lines with --follow).

    Example: liaison inbox DE-BKA --type query --follow
    """
    settings = bus_settings()
    chosen = _types(types)
    topics = [settings.topics.inbox(t, agency) for t in chosen]
    stream = _Stream(json=json, columns=_MESSAGE_COLUMNS)
    collected: list[tuple[list[str], Record]] = []

    def show(cells: list[str], record: Record) -> None:
        if follow:
            stream.row(cells, record)
        else:
            collected.append((cells, record))

    async def by_scan() -> None:
        async with TopicScan(settings, topics) as scan:
            if follow:
                _started_following(json)
            async for item in scan.items(follow=follow):
                if item.type is None or item.record is None:
                    show(["?", "?", f"{item.topic}@{item.offset}", "-", "-", "-", escape(item.error or "")],
                         _item_json(item))
                else:
                    show(_message_row(item.type, item.record), _item_json(item))

    async def by_group() -> None:
        async with AgencyClient(settings, agency) as client, \
                client.inbox(chosen, group=group, until_end=not follow) as messages:
            if follow:
                _started_following(json)
            async for message_type, record in messages:
                show(_message_row(message_type, record),
                     {"type": message_type, "record": record, "group": messages.group_id})

    _read(by_group if group else by_scan, follow=follow, doing=f"reading the inbox of {agency}",
          timeout=timeout, settings=settings, json=json)
    if not follow:
        if not collected and not json:
            named = f" for group {agency_group_prefix(settings.topics, agency)}{group}" if group else ""
            typer.echo(f"nothing in the inbox of {agency}{named}")
            return
        table(Out(json=json), f"inbox of {agency}", _MESSAGE_COLUMNS, [c for c, _ in collected],
              records=[r for _, r in collected])


def _started_following(json: bool) -> None:
    if not json and sys.stderr.isatty():
        typer.echo("following; Ctrl-C to stop", err=True)


def _read(work: Callable[[], Awaitable[None]], *, follow: bool, doing: str, timeout: float,
          settings: KafkaSettings, json: bool) -> None:
    """Run a read; with --follow there is no deadline and Ctrl-C is the normal way out (exit 0)."""
    try:
        run(work, doing=doing, timeout_s=None if follow else timeout, settings=settings,
            message=None if follow else doing, json=json)
    except SystemExit as exc:
        if follow and exc.code == 130:
            raise SystemExit(0) from None
        raise


def receipts(agency: AgencyArg, *, about: Annotated[str | None, typer.Option(
        "--about", metavar="MESSAGE_ID", help="Only receipts about this message.")] = None,
        follow: FollowOpt = False, group: GroupIdOpt = None, timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
        json: JsonOpt = False) -> None:
    """List what the bus told an agency: delivered, denied and why, held, overdue, hits.

    Example: liaison receipts FR-PN --about 1b4e28ba-2fa1-11d2-883f-0016d3cca427
    """
    settings = bus_settings()
    stream = _Stream(json=json, columns=_RECEIPT_COLUMNS)
    collected: list[Record] = []

    def show(receipt: Record) -> None:
        if about is not None and receipt["envelope"].get("correlation_id") != about:
            return
        if follow:
            row = _receipt_row(receipt)
            stream.row(_receipt_cells(row), row)
        else:
            collected.append(receipt)

    async def by_scan() -> None:
        async with TopicScan(settings, [settings.topics.receipts(agency)]) as scan:
            if follow:
                _started_following(json)
            async for item in scan.items(follow=follow):
                if item.type == "Receipt" and item.record is not None:
                    show(item.record)

    async def by_group() -> None:
        async with AgencyClient(settings, agency) as client, \
                client.receipts(group=group, until_end=not follow) as found:
            if follow:
                _started_following(json)
            async for receipt in found:
                show(receipt)

    _read(by_group if group else by_scan, follow=follow, doing=f"reading the receipts of {agency}",
          timeout=timeout, settings=settings, json=json)
    if not follow:
        if not collected and not json:
            typer.echo(f"no receipts for {agency}" + (f" about {about}" if about else ""))
            return
        _receipts_table(Out(json=json), collected)

