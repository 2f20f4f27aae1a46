"""`liaison agency`: onboard an agency (its topics and directory entry), list, suspend, resume, remove,
and set how fast its user may use the broker (`quota`)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from liaison import onboarding
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
    run,
    table,
)
from liaison.cli.output import Out, fail
from liaison.core.settings import KafkaSettings
from liaison.errors import ConfigError
from liaison.local.paths import secrets_dir
from liaison.security.credentials import CredentialFiles
from liaison.security.quotas import (
    MIN_FETCH_RATE,
    MIN_PRODUCE_RATE,
    MIN_REQUEST_PERCENTAGE,
    Quota,
    quota_defaults,
)

app = typer.Typer(cls=OneLineGroup, no_args_is_help=True,
                  help="Onboard agencies: their topics and their entry in the bus directory.")


def _report(outcome: onboarding.Outcome, *, json: bool, access: bool = False) -> None:
    """The summary, notes, and what changed in Kafka access (always with `access`, e.g. rotate)."""
    if json:
        emit_json(outcome.to_dict())
        return
    typer.echo(f"{outcome.code}: {outcome.summary()}")
    for note in outcome.notes:
        typer.echo(f"  note: {note}")
    for line in outcome.access if outcome.changed or access else ():
        typer.echo(f"  access: {line}")


CredentialsDirOpt = Annotated[Path | None, typer.Option(
    "--credentials-dir", metavar="DIR", file_okay=False,
    help="Where a new credential file goes (mode 0600); default: the local stack's secrets folder.")]
PrintOpt = Annotated[bool, typer.Option(
    "--print-credential", help="Show a new password once on stdout instead of writing a file.")]


def access_for(settings: KafkaSettings, directory: Path | None, show: bool) -> onboarding.AccessControl:
    """Credentials, ACLs and quotas on a secured cluster; a wrong prefix or quota setting exits 2."""
    files = None if show else CredentialFiles(directory or secrets_dir())
    try:
        defaults = quota_defaults() if settings.security_protocol.startswith("SASL") else None
        return onboarding.access_control(settings, files, quota_defaults=defaults)
    except ConfigError as exc:
        fail(str(exc), code=2)


@app.command("add", cls=OneLineCommand)
def add(
    code: Annotated[str | None, typer.Argument(
        callback=agency_code, metavar="AGENCY", show_default=False,
        help="Agency code, e.g. FR-PN (none with --from-file).")] = None, *,
    country: Annotated[str | None, typer.Option(
        "--country", metavar="CC", show_default=False,
        help="ISO 3166 alpha-2 country, or INT / EU; the code's prefix.")] = None,
    name: Annotated[str | None, typer.Option("--name", show_default=False, help="The agency's full name.")
                    ] = None,
    groups: Annotated[list[str] | None, typer.Option(
        "--group", metavar="GROUP", help="A standing group it belongs to (EU, SCHENGEN...); repeat.")] = None,
    clearances: Annotated[list[str] | None, typer.Option(
        "--clearance", metavar="CATEGORY",
        help="A protected data category it may receive (BIOMETRIC, DNA, FINGERPRINT, FACIAL_IMAGE); "
        "repeat.")] = None,
    hub: Annotated[bool | None, typer.Option("--hub/--no-hub", show_default=False,
                                             help="Whether it reviews notices (default: unchanged).")] = None,
    from_file: Annotated[Path | None, typer.Option(
        "--from-file", metavar="FILE", dir_okay=False, show_default=False,
        help="Onboard every agency a YAML or JSON file lists under `agencies:` (code, name, and "
        "optionally country, groups, clearances, hub, as in deploy/directory.yaml), in batched "
        "admin requests.")] = None,
    partitions: Annotated[int, typer.Option("--partitions", min=1, help="Partitions of each topic.")] = 1,
    replication: Annotated[int | None, typer.Option(
        "--replication", min=1, show_default=False,
        help="Replication factor of each topic (default: LIAISON_REPLICATION_FACTOR, else 3 on a "
             "cluster of three brokers or more, else one per broker).")] = None,
    credentials_dir: CredentialsDirOpt = None, print_credential: PrintOpt = False,
    timeout: Annotated[float | None, typer.Option(
        "--timeout", min=0.1, metavar="SECONDS", show_default=False,
        help=f"Give up after this long (default {DEFAULT_TIMEOUT_S * 3:g} s, and "
        f"{FILE_TIMEOUT_PER_AGENCY_S:g} s more per agency of a file).")] = None,
    json: JsonOpt = False,
) -> None:
    """Create an agency's 7 topics and publish its directory entry; running it again changes nothing.

    Given again with other values, it updates the entry (status and hub flag are kept). On a secured
    cluster it also creates the agency's SCRAM credential, exactly its ACLs, and the default client
    quotas it lacks (LIAISON_AGENCY_PRODUCE_BYTE_RATE, _FETCH_BYTE_RATE, _REQUEST_PERCENTAGE).
    With --from-file, every agency of the file is onboarded at once (an entry without `hub` is not
    a hub), and a last line counts what changed.

    Example: liaison agency add SE-NOA --country SE --name "Polisen NOA" --group EU --clearance DNA

    Example: liaison agency add --from-file agencies.yaml
    """
    single = (code, country, name, groups, clearances, hub)
    if from_file is not None:
        if any(v is not None for v in single):
            fail("--from-file onboards the agencies its file lists: give no AGENCY, --country, --name, "
                 "--group, --clearance or --hub with it", code=2)
        _add_from_file(from_file, partitions=partitions, replication=replication,
                       credentials_dir=credentials_dir, print_credential=print_credential, timeout=timeout,
                       json=json)
        return
    if code is None or country is None or name is None:
        fail("give an AGENCY with --country and --name, or --from-file FILE", code=2)
    settings = bus_settings()
    request = onboarding.AgencyRequest(code, name, country, tuple(groups or ()), tuple(clearances or ()), hub)
    outcome = run(lambda: _onboard(settings, [request], partitions, replication,
                                   access_for(settings, credentials_dir, print_credential)),
                  doing=f"onboarding {code}", timeout_s=timeout or DEFAULT_TIMEOUT_S * 3, settings=settings,
                  message=f"onboarding {code}", json=json)[0]
    _report(outcome, json=json)


FILE_TIMEOUT_PER_AGENCY_S = 0.5
"""What `add --from-file` allows per agency on top of a single add's timeout (topics, hashing a password)."""


async def _onboard(settings: KafkaSettings, requests: list[onboarding.AgencyRequest], partitions: int,
                   replication: int | None, access: onboarding.AccessControl) -> list[onboarding.Outcome]:
    return await onboarding.onboard_many(settings, requests, partitions=partitions, replication=replication,
                                         access=access)


def _add_from_file(path: Path, *, partitions: int, replication: int | None, credentials_dir: Path | None,
                   print_credential: bool, timeout: float | None, json: bool) -> None:
    """`add --from-file`: each agency's report as a single add gives it, then the totals."""
    try:
        requests = onboarding.read_agencies(path)
    except ConfigError as exc:
        fail(str(exc), code=2)
    settings = bus_settings()
    access = access_for(settings, credentials_dir, print_credential)
    limit = timeout or DEFAULT_TIMEOUT_S * 3 + FILE_TIMEOUT_PER_AGENCY_S * len(requests)
    what = f"onboarding {len(requests)} agencies from {path}"
    outcomes = run(lambda: _onboard(settings, requests, partitions, replication, access), doing=what,
                   timeout_s=limit, settings=settings, message=what, json=json)
    if json:
        emit_json([outcome.to_dict() for outcome in outcomes])
        return
    for outcome in outcomes:
        _report(outcome, json=False)
    changes = Counter(outcome.directory for outcome in outcomes)
    topics = sum(len(outcome.topics_created) for outcome in outcomes)
    typer.echo(f"{len(outcomes)} agencies from {path}: {changes['added']} added, "
               f"{changes['updated']} updated, {changes['unchanged']} unchanged; {topics} topics created")


@app.command("list", cls=OneLineCommand)
def list_(*, timeout: TimeoutOpt = DEFAULT_TIMEOUT_S, json: JsonOpt = False) -> None:
    """List the agencies in the directory, their status and whether their topics exist.

    Example: liaison agency list --json
    """
    settings = bus_settings()
    views = run(lambda: onboarding.list_agencies(settings), doing="reading the directory", timeout_s=timeout,
                settings=settings, message="reading the directory", json=json)
    rows = []
    for v in views:
        a, present = v.agency, sum(v.topics.values())
        rows.append([a.code, escape(a.name), a.country, ", ".join(sorted(a.groups)) or "-",
                     "yes" if a.hub else "-", a.status if a.active else f"[red]{a.status}[/red]",
                     ", ".join(sorted(a.clearances)) or "-", f"{present}/{len(v.topics)}"])
    table(Out(json=json), "agencies", ["code", "name", "country", "groups", "hub", "status", "clearances",
                                      "topics"], rows, records=[v.to_dict() for v in views])


@app.command("show", cls=OneLineCommand)
def show(code: AgencyArg, *, timeout: TimeoutOpt = DEFAULT_TIMEOUT_S, json: JsonOpt = False) -> None:
    """Show one agency's directory entry, its topics and, on a secured cluster, its user and quotas.

    Example: liaison agency show FR-PN
    """
    settings = bus_settings()
    access = access_for(settings, None, True)
    view = run(lambda: onboarding.show_agency(settings, code, access=access),
               doing=f"reading the directory entry of {code}", timeout_s=timeout, settings=settings,
               message="reading the directory", json=json)
    if json:
        emit_json(view.to_dict())
        return
    a = view.agency
    out = Out()
    table(out, a.code, ["field", "value"], [
        ["name", escape(a.name)], ["country", a.country], ["status", a.status],
        ["hub", "yes" if a.hub else "no"], ["groups", ", ".join(sorted(a.groups)) or "-"],
        ["clearances", ", ".join(sorted(a.clearances)) or "-"]])
    table(out, "topics", ["topic", "exists"],
              [[t, "yes" if ok else "[red]MISSING[/red]"] for t, ok in view.topics.items()])
    if view.quotas is not None:
        _quota_table(out, view.quotas)


def _quota_table(out: Out, view: onboarding.QuotaView) -> None:
    q = view.quota

    def shown(value: float | None, unit: str) -> str:
        return "unlimited" if value is None else f"{value:.10g} {unit}"

    table(out, f"quotas of user {view.user} (per broker)", ["quota", "value"], [
        ["producer_byte_rate", shown(q.produce_bytes, "bytes/s")],
        ["consumer_byte_rate", shown(q.fetch_bytes, "bytes/s")],
        ["request_percentage", shown(q.request_percentage, "%")]])


@app.command("quota", cls=OneLineCommand)
def quota(
    code: AgencyArg, *,
    produce_bytes: Annotated[int | None, typer.Option(
        "--produce-bytes", min=MIN_PRODUCE_RATE, metavar="BYTES", show_default=False,
        help=f"Bytes per second it may write, per broker (at least {MIN_PRODUCE_RATE}).")] = None,
    fetch_bytes: Annotated[int | None, typer.Option(
        "--fetch-bytes", min=MIN_FETCH_RATE, metavar="BYTES", show_default=False,
        help=f"Bytes per second it may read, per broker (at least {MIN_FETCH_RATE}: a 1 MiB record batch "
        "must fit in the quota's 10 s window, or it is never delivered).")] = None,
    request_percentage: Annotated[float | None, typer.Option(
        "--request-percentage", min=MIN_REQUEST_PERCENTAGE, metavar="PERCENT", show_default=False,
        help=f"Share of one broker thread its requests may use (at least {MIN_REQUEST_PERCENTAGE:g}).",
    )] = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S, json: JsonOpt = False,
) -> None:
    """Show an agency's client quotas, or change the ones given; the others stay as they are.

    Past a quota the broker delays the agency's requests until its rate is back under it (it is
    never refused). Defaults at onboarding: LIAISON_AGENCY_PRODUCE_BYTE_RATE (1 MiB/s),
    LIAISON_AGENCY_FETCH_BYTE_RATE (4 MiB/s), LIAISON_AGENCY_REQUEST_PERCENTAGE (50).

    Example: liaison agency quota SE-NOA --produce-bytes 2097152
    """
    settings = bus_settings()
    changes = Quota(produce_bytes, fetch_bytes, request_percentage)
    access = access_for(settings, None, True)
    view = run(lambda: onboarding.agency_quota(settings, code, changes, access=access),
               doing=f"the quotas of {code}", timeout_s=timeout, settings=settings,
               message=f"the quotas of {code}", json=json)
    if json:
        emit_json(view.to_dict())
        return
    if view.changed:
        typer.echo(f"{view.code}: quotas of {view.user} changed ({', '.join(view.changed)})")
    _quota_table(Out(), view)


def _status(code: str, status: str, *, timeout: float, json: bool, credentials_dir: Path | None = None,
            print_credential: bool = False) -> None:
    settings = bus_settings()
    access = access_for(settings, credentials_dir, print_credential)
    outcome = run(lambda: onboarding.set_status(settings, code, "SUSPENDED" if status == "SUSPENDED"
                                                else "ACTIVE", access=access),
                  doing=f"changing the status of {code}", timeout_s=timeout, settings=settings,
                  message=f"changing the status of {code}", json=json)
    _report(outcome, json=json)


@app.command("suspend", cls=OneLineCommand)
def suspend(code: AgencyArg, *, timeout: TimeoutOpt = DEFAULT_TIMEOUT_S, json: JsonOpt = False) -> None:
    """Suspend an agency: the router refuses what it sends and delivers nothing to it.

    On a secured cluster its credential and ACLs are deleted: the broker lets it in no more (its
    quotas are kept for its return).

    Example: liaison agency suspend SE-NOA
    """
    _status(code, "SUSPENDED", timeout=timeout, json=json)


@app.command("resume", cls=OneLineCommand)
def resume(code: AgencyArg, *, credentials_dir: CredentialsDirOpt = None, print_credential: PrintOpt = False,
           timeout: TimeoutOpt = DEFAULT_TIMEOUT_S, json: JsonOpt = False) -> None:
    """Let a suspended agency send and receive again (with a new credential on a secured cluster).

    Its ACLs come back, and any quota it lacks gets the default.

    Example: liaison agency resume SE-NOA
    """
    _status(code, "ACTIVE", timeout=timeout, json=json, credentials_dir=credentials_dir,
            print_credential=print_credential)


@app.command("rotate", cls=OneLineCommand)
def rotate(code: AgencyArg, *, credentials_dir: CredentialsDirOpt = None, print_credential: PrintOpt = False,
           timeout: TimeoutOpt = DEFAULT_TIMEOUT_S, json: JsonOpt = False) -> None:
    """Give an agency a new password; the old one no longer logs in (open connections keep going).

    Example: liaison agency rotate SE-NOA --print-credential
    """
    settings = bus_settings()
    access = access_for(settings, credentials_dir, print_credential)
    outcome = run(lambda: onboarding.rotate_credential(settings, code, access=access),
                  doing=f"rotating the credential of {code}", timeout_s=timeout, settings=settings,
                  message=f"rotating the credential of {code}", json=json)
    _report(outcome, json=json, access=True)


@app.command("remove", cls=OneLineCommand)
def remove(code: AgencyArg, *, timeout: TimeoutOpt = DEFAULT_TIMEOUT_S, json: JsonOpt = False) -> None:
    """Remove an agency from the directory; its topics and the audit trail are kept.

    On a secured cluster its credential, ACLs and quotas are deleted.

    Example: liaison agency remove SE-NOA
    """
    settings = bus_settings()
    access = access_for(settings, None, False)
    outcome = run(lambda: onboarding.remove_agency(settings, code, access=access), doing=f"removing {code}",
                  timeout_s=timeout, settings=settings, message=f"removing {code}", json=json)
    _report(outcome, json=json)
