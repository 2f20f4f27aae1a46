"""`liaison`: one entry point; each sub-command says what it needs and fails in one clear line."""

from __future__ import annotations

import asyncio
import platform
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from liaison import __version__
from liaison.cli import agency as agency_cli
from liaison.cli import case_group as case_group_cli
from liaison.cli import export as export_cli
from liaison.cli import inspect as inspect_cli
from liaison.cli import messages as messages_cli
from liaison.cli import officer as officer_cli
from liaison.cli import policy as policy_cli
from liaison.cli import provision as provision_cli
from liaison.cli import schemas as schemas_cli
from liaison.cli import top as top_cli
from liaison.cli.messages import bus_settings
from liaison.cli.output import Out, fail
from liaison.errors import LiaisonError

if TYPE_CHECKING:
    from liaison.core.settings import KafkaSettings
    from liaison.local.stack import Status

app = typer.Typer(
    name="liaison", cls=messages_cli.OneLineGroup, no_args_is_help=True, add_completion=False,
    pretty_exceptions_enable=False,
    help="Liaison: the police information-exchange bus on Apache Kafka.",
)

# Agency operators and bus operators: the command bodies live in their own modules.
app.add_typer(schemas_cli.app, name="schemas")
app.add_typer(agency_cli.app, name="agency")
app.add_typer(officer_cli.app, name="officer")
app.add_typer(case_group_cli.app, name="case-group")
app.add_typer(messages_cli.send_app, name="send")
app.command("inbox", cls=messages_cli.OneLineCommand)(messages_cli.inbox)
app.command("receipts", cls=messages_cli.OneLineCommand)(messages_cli.receipts)
app.command("case", cls=messages_cli.OneLineCommand)(inspect_cli.case)
app.command("trace", cls=messages_cli.OneLineCommand)(inspect_cli.trace)
app.add_typer(inspect_cli.deadletter_app, name="deadletter")
app.add_typer(policy_cli.policy_app, name="policy")
app.add_typer(export_cli.app, name="export")
app.command("top")(top_cli.top)
app.command("provision", cls=messages_cli.OneLineCommand)(provision_cli.provision)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


@app.command()
def version() -> None:
    """Print the version of Liaison.

    Example: liaison version
    """
    typer.echo(__version__)


@app.command()
def doctor(json: JsonOpt = False) -> None:
    """Check what the bus needs here and say how to fix what is missing.

    Example: liaison doctor
    """
    from liaison.local import paths  # noqa: PLC0415  # keep `liaison --help` fast
    from liaison.local.broker import broker_answers, java_major_version  # noqa: PLC0415
    from liaison.local.stack import registry_answers  # noqa: PLC0415

    settings = bus_settings()
    checks: list[tuple[str, bool, str]] = []
    py = sys.version_info
    checks.append(("python", py >= (3, 11), f"{platform.python_version()}"
                   + ("" if py >= (3, 11) else " - install Python 3.11+")))
    major = java_major_version()
    checks.append(("java", major is not None and major >= 17,
                   f"{major}" if major and major >= 17 else
                   "Java 17+ missing - apt-get install openjdk-17-jre-headless"))
    jars = list(paths.kafka_jars_dir().glob("kafka_2.13-*.jar"))
    checks.append(("kafka jars", bool(jars), jars[0].name if jars else
                   f"missing in {paths.kafka_jars_dir()} - run `make kafka`"))
    up = asyncio.run(broker_answers(settings, timeout_s=3))
    checks.append(("broker", up, settings.bootstrap_servers if up else
                   f"no answer at {settings.bootstrap_servers} - run `make up`"))
    if up:
        checks.append(_replication_check(settings))
    reg_ok, reg_note = registry_answers(settings)
    checks.append(("registry", reg_ok, reg_note))
    out = Out(json=json)
    out.table("doctor", ["check", "ok", "detail"],
              [[name, "yes" if ok else "NO", note] for name, ok, note in checks],
              records=[{"check": n, "ok": ok, "detail": d} for n, ok, d in checks])
    if not all(ok for _, ok, _ in checks):
        raise typer.Exit(1)


def _replication_check(settings: KafkaSettings) -> tuple[str, bool, str]:
    """The bus's topics lacking a replica in sync, or with fewer replicas than configured."""
    from liaison.cluster_health import replication_report  # noqa: PLC0415

    try:
        problems = asyncio.run(replication_report(settings))
    except Exception as exc:  # noqa: BLE001  # a check that cannot run says why, in one line
        return "replication", False, f"could not describe the topics: {exc}"
    if not problems:
        return "replication", True, "every bus topic has its replicas, all in sync"
    more = f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
    shown = "; ".join(map(str, problems[:5])) + more
    return "replication", False, f"{len(problems)} problem(s): {shown}"


@app.command()
def up() -> None:
    """Start the local broker and every bus service in the background.

    Example: liaison up
    """
    from liaison.local.stack import LocalStack  # noqa: PLC0415

    out = Out()
    out.progress("starting the local broker and services")
    rows = LocalStack().up()
    _print_status(out, rows)


@app.command()
def down() -> None:
    """Stop everything `liaison up` started (by pid), broker last.

    Example: liaison down
    """
    from liaison.local.stack import LocalStack  # noqa: PLC0415

    stopped = LocalStack().down()
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@app.command()
def status(json: JsonOpt = False) -> None:
    """List the local broker and services: state, pid, address, log file.

    Example: liaison status --json
    """
    from liaison.local.stack import LocalStack  # noqa: PLC0415

    _print_status(Out(json=json), LocalStack().status())


def _print_status(out: Out, rows: list[Status]) -> None:
    out.table(
        "local stack", ["name", "state", "pid", "address", "log"],
        [[r.name, "running" if r.pid else "stopped", str(r.pid or "-"), r.address, str(r.log)]
         for r in rows],
        records=[{"name": r.name, "running": r.pid is not None, "pid": r.pid,
                  "address": r.address, "log": str(r.log)} for r in rows],
    )


@app.command()
def demo() -> None:
    """Start the stack and play the multi-agency scenario, then print what happened.

    Example: liaison demo
    """
    from liaison.demo import run_demo  # noqa: PLC0415

    run_demo(Out())


def main() -> None:
    """Console entry: faults of ours become one line and exit 1, never a traceback."""
    try:
        app(standalone_mode=True)
    except LiaisonError as exc:
        fail(str(exc))


if __name__ == "__main__":
    main()
