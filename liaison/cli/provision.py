"""`liaison provision`: put the bus on an existing Kafka cluster, or bring it in line again."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from liaison.cli.messages import JsonOpt, bus_settings, emit_json, run
from liaison.cli.output import fail
from liaison.errors import ConfigError


def provision(
    *,
    directory: Annotated[Path | None, typer.Option(
        "--directory", metavar="FILE", exists=True, dir_okay=False, show_default=False,
        help="The directory YAML to publish (default: deploy/directory.yaml).")] = None,
    policy: Annotated[Path | None, typer.Option(
        "--policy", metavar="FILE", exists=True, dir_okay=False, show_default=False,
        help="The sharing policy, for the audit trail's retention (default: LIAISON_POLICY_FILE, "
             "else deploy/policy.yaml).")] = None,
    credentials_dir: Annotated[Path | None, typer.Option(
        "--credentials-dir", metavar="DIR", file_okay=False, show_default=False,
        help="Where the credential file of each principal issued now goes (mode 0600); needed on a "
             "secured cluster.")] = None,
    principals: Annotated[bool, typer.Option(
        "--principals/--no-principals",
        help="On a secured cluster, also set every principal's credential, ACLs and quota. "
             "--no-principals: topics and directory only, when users are managed elsewhere (Strimzi's "
             "KafkaUsers from `liaison export strimzi`).")] = True,
    partitions: Annotated[int, typer.Option("--partitions", min=1,
                                            help="Partitions of the bus's busy topics.")] = 3,
    timeout: Annotated[float, typer.Option("--timeout", min=1, metavar="SECONDS",
                                           help="Give up after this long.")] = 300.0,
    json: JsonOpt = False,
) -> None:
    """Create or align the bus's topics, directory, users, ACLs and quotas on the cluster of
    LIAISON_BOOTSTRAP_SERVERS, as its admin (LIAISON_SASL_USERNAME and _PASSWORD, or
    LIAISON_CREDENTIALS). Idempotent: it prints what it changed, and a second run changes nothing.

    Example: liaison provision --credentials-dir ./secrets
    """
    from liaison.local.stack import DEFAULT_POLICY, POLICY_VARIABLE  # noqa: PLC0415
    from liaison.policy import load_policy  # noqa: PLC0415
    from liaison.provision import DEFAULT_DIRECTORY  # noqa: PLC0415
    from liaison.provision import provision as provision_bus  # noqa: PLC0415
    from liaison.security.credentials import CredentialFiles  # noqa: PLC0415

    settings = bus_settings()
    secured = principals and settings.security_protocol.startswith("SASL")
    if secured and credentials_dir is None:
        fail("the cluster is secured: --credentials-dir DIR says where the new principals' credential "
             "files go (or --no-principals)", code=2)
    try:
        policy_file = policy or Path(os.environ.get(POLICY_VARIABLE) or DEFAULT_POLICY)
        retention = load_policy(policy_file).audit_retention_ms
    except ConfigError as exc:
        fail(str(exc), code=2)
    files = CredentialFiles(credentials_dir) if secured and credentials_dir is not None else None
    done = run(lambda: provision_bus(settings, directory or DEFAULT_DIRECTORY, partitions=partitions,
                                     audit_retention_ms=retention, credentials=files),
               doing=f"provisioning the bus on {settings.bootstrap_servers}", timeout_s=timeout,
               settings=settings, message="provisioning", json=json)
    lines = done.lines()
    if json:
        emit_json({"changes": lines, "changed": bool(lines)})
        return
    for line in lines:
        typer.echo(line)
    typer.echo(f"{len(lines)} change(s)" if lines else "nothing to change: the bus is provisioned")
