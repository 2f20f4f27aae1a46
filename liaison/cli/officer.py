"""`liaison officer`: post a liaison officer abroad for an agency, list officers, revoke one."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer
from rich.markup import escape

from liaison import officers
from liaison.cli.agency import CredentialsDirOpt, PrintOpt, access_for
from liaison.cli.messages import (
    DEFAULT_TIMEOUT_S,
    AgencyArg,
    JsonOpt,
    OneLineCommand,
    OneLineGroup,
    TimeoutOpt,
    agency_code,
    bus_settings,
    emit_json,
    parse_time,
    run,
    table,
)
from liaison.cli.output import Out, fail
from liaison.errors import LiaisonError

app = typer.Typer(cls=OneLineGroup, no_args_is_help=True,
                  help="Liaison officers posted abroad: a delegated identity with its own credential "
                       "and inbox.")


def _when(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _report(view: officers.OfficerView, *, json: bool) -> None:
    if json:
        emit_json(view.to_dict())
        return
    o = view.officer
    scope = ", ".join([*(f"case {c}" for c in sorted(o.cases)),
                       *(f"country {c}" for c in sorted(o.countries))])
    typer.echo(f"{o.code}: {o.status} liaison officer of {o.agency}"
               f"{f' in {o.post}' if o.post else ''}, {scope}, until {_when(o.ends_at)}")
    for line in view.access:
        typer.echo(f"  access: {line}")


@app.command("post", cls=OneLineCommand)
def post(
    agency: AgencyArg,
    post_code: Annotated[str, typer.Argument(
        metavar="POST", help="Short name of the post, e.g. BOGOTA: the officer is <AGENCY>-<POST>.")], *,
    where: Annotated[str, typer.Option("--where", metavar="TEXT",
                                       help="Where the officer serves, in words.")] = "",
    cases: Annotated[list[str] | None, typer.Option(
        "--case", metavar="CASE_ID", help="A case delegated to the officer; repeat.")] = None,
    countries: Annotated[list[str] | None, typer.Option(
        "--country", metavar="CC", help="A partner country delegated (ISO 3166 alpha-2); repeat.")] = None,
    until: Annotated[str, typer.Option(
        "--until", metavar="WHEN", help="When the delegation ends: ISO 8601 or a delay (90d).")] = "90d",
    starts: Annotated[str | None, typer.Option(
        "--from", metavar="WHEN", show_default=False, help="When it begins (default: now).")] = None,
    credentials_dir: CredentialsDirOpt = None, print_credential: PrintOpt = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S * 3, json: JsonOpt = False,
) -> None:
    """Post a liaison officer: its topics, credential and ACLs, and its directory entry.

    Messages of its delegated cases (or from its partner countries) that reach its agency are also
    delivered to it, marked as copies; it sends for its agency within the delegation.

    Example: liaison officer post FR-PN BOGOTA --where "Bogota" --case OP-CONDOR --country CO --until 180d
    """
    if not cases and not countries:
        fail("a delegation names its cases (--case) or its partner countries (--country)", code=2)
    try:
        ends_at = parse_time(until, "--until")
        starts_at = parse_time(starts, "--from") if starts is not None else None
    except LiaisonError as exc:
        fail(str(exc), code=2)
    assert ends_at is not None
    settings = bus_settings()
    access = access_for(settings, credentials_dir, print_credential)
    view = run(lambda: officers.post_officer(settings, agency, post_code, post=where, cases=cases or (),
                                             countries=countries or (), starts_at=starts_at, ends_at=ends_at,
                                             access=access),
               doing=f"posting an officer of {agency}", timeout_s=timeout, settings=settings,
               message="posting the officer", json=json)
    _report(view, json=json)


@app.command("revoke", cls=OneLineCommand)
def revoke(
    code: Annotated[str, typer.Argument(metavar="OFFICER", help="The officer's code, e.g. FR-PN-BOGOTA.")], *,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S * 3, json: JsonOpt = False,
) -> None:
    """End a delegation now: the router stops at once, then its ACLs and credential are deleted.

    Example: liaison officer revoke FR-PN-BOGOTA
    """
    settings = bus_settings()
    access = access_for(settings, None, False)  # its local credential file goes too
    view = run(lambda: officers.revoke_officer(settings, code, access=access),
               doing=f"revoking {code}", timeout_s=timeout, settings=settings, message="revoking", json=json)
    _report(view, json=json)


@app.command("list", cls=OneLineCommand)
def list_(
    agency: Annotated[str | None, typer.Argument(
        callback=agency_code, metavar="[AGENCY]", show_default=False,
        help="Only this agency's officers.")] = None, *,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S, json: JsonOpt = False,
) -> None:
    """List the liaison officers in the directory, their delegation and whether it is in force.

    Example: liaison officer list FR-PN
    """
    settings = bus_settings()
    views = run(lambda: officers.list_officers(settings, agency), doing="reading the directory",
                timeout_s=timeout, settings=settings, message="reading the directory", json=json)
    rows = [[v.officer.code, v.officer.agency, escape(v.officer.post) or "-",
             ", ".join(sorted(v.officer.cases)) or "-", ", ".join(sorted(v.officer.countries)) or "-",
             _when(v.officer.ends_at), "yes" if v.in_force else f"[red]no ({v.officer.status})[/red]",
             f"{sum(v.topics.values())}/{len(v.topics)}"] for v in views]
    columns = ["code", "agency", "post", "cases", "countries", "until", "in force", "topics"]
    table(Out(json=json), "liaison officers", columns, rows, records=[v.to_dict() for v in views])
