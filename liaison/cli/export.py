"""`liaison export strimzi`: the bus as Kubernetes resources for the Strimzi operators (`liaison.strimzi`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from liaison import onboarding
from liaison.cli.messages import (
    DEFAULT_TIMEOUT_S,
    OneLineCommand,
    OneLineGroup,
    TimeoutOpt,
    bus_settings,
    run,
)
from liaison.cli.output import fail
from liaison.cli.policy import DEFAULT_POLICY
from liaison.directory import Directory
from liaison.errors import ConfigError
from liaison.policy import load_policy
from liaison.security.quotas import quota_defaults
from liaison.strimzi import Export, ExportOptions, ExternalListener, export

app = typer.Typer(cls=OneLineGroup, no_args_is_help=True,
                  help="Write the bus as resources for another platform to create.")

@app.command("strimzi", cls=OneLineCommand)
def strimzi(
    *,
    directory: Annotated[Path | None, typer.Option(
        "--directory", metavar="FILE", dir_okay=False, show_default=False,
        help="Take the agencies from this directory file (e.g. deploy/directory.yaml) instead of the "
        "bus's `bus.directory` topic; no broker is needed then.")] = None,
    policy: Annotated[Path, typer.Option(
        "--policy", metavar="FILE", dir_okay=False, help="The sharing policy: how long bus.audit keeps "
        "its records.")] = DEFAULT_POLICY,
    cluster: Annotated[str, typer.Option(
        "--cluster", metavar="NAME", help="Name of the Kafka resource (strimzi.io/cluster).")] = "liaison",
    namespace: Annotated[str | None, typer.Option(
        "--namespace", metavar="NAME", show_default=False,
        help="Namespace of every resource (default: none, kubectl's current one).")] = None,
    replicas: Annotated[int, typer.Option("--replicas", min=1, metavar="N",
                                          help="Replication factor of every topic.")] = 3,
    min_insync: Annotated[int, typer.Option("--min-insync", min=1, metavar="N",
                                            help="In-sync replicas a write with acks=all needs.")] = 2,
    nodes: Annotated[int, typer.Option("--nodes", min=1, metavar="N",
                                       help="Kafka nodes, each a KRaft controller and a broker.")] = 3,
    partitions: Annotated[int, typer.Option(
        "--partitions", min=1, metavar="N", help="Partitions of bus.audit, bus.queries and bus.routed.")] = 3,
    agency_partitions: Annotated[int, typer.Option(
        "--agency-partitions", min=1, metavar="N", help="Partitions of each agency topic.")] = 1,
    storage_size: Annotated[str, typer.Option(
        "--storage-size", metavar="SIZE", help="Persistent volume of each node.")] = "100Gi",
    storage_class: Annotated[str | None, typer.Option(
        "--storage-class", metavar="NAME", show_default=False,
        help="Storage class of the volumes (default: the cluster's).")] = None,
    external: Annotated[ExternalListener | None, typer.Option(
        "--external", show_default=False,
        help="Also a SCRAM-over-TLS listener for agencies outside the Kubernetes cluster, of this "
        "type (port 9094).")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", metavar="DIR", file_okay=False, show_default=False,
        help=f"Write {', '.join(Export.FILES)} into DIR instead of one stream on stdout.")] = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """Write the Kafka cluster, a KafkaTopic per bus and agency topic and a KafkaUser per principal.

    The KafkaUsers carry exactly the ACLs and quotas onboarding gives (LIAISON_AGENCY_* sets the
    quotas, LIAISON_TOPIC_PREFIX the names). Agencies come from the bus's directory, or from
    --directory. The output has a fixed order: export again after a change and review the diff.

    Example: liaison export strimzi --directory deploy/directory.yaml --namespace bus --out k8s/
    """
    try:
        options = ExportOptions(
            cluster=cluster, namespace=namespace, replicas=replicas, min_insync=min_insync, nodes=nodes,
            partitions=partitions, agency_partitions=agency_partitions, storage_size=storage_size,
            storage_class=storage_class, external=external, agency_quota=quota_defaults(),
            audit_retention_ms=load_policy(policy).audit_retention_ms).checked()
        found = Directory.from_file(directory) if directory is not None else None
    except ConfigError as exc:
        fail(str(exc), code=2)
    settings = bus_settings()
    if found is None:
        entries = run(lambda: onboarding.read_entries(settings), doing="reading the directory",
                      timeout_s=timeout, settings=settings, message="reading the directory")
        found = onboarding.current_directory(entries)
    try:
        resources = export(settings.topics, found, options)
    except ConfigError as exc:
        fail(str(exc), code=2)
    if out is None:
        typer.echo(resources.to_yaml(), nl=False)
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, text in resources.files().items():
            (out / name).write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write to {out}: {exc.strerror}")
    typer.echo(f"{out}: {len(resources.cluster)} cluster resources, {len(resources.topics)} topics, "
               f"{len(resources.users)} users ({', '.join(Export.FILES)})")
