"""`liaison schemas`: register the contract, or check a working tree against the registry."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from liaison.cli.messages import bus_settings
from liaison.cli.output import Out, fail
from liaison.contract import register_all
from liaison.errors import LiaisonError
from liaison.registry_client import RegistryClient
from liaison.schemas import RECORD_TYPES, load_catalog, subject_for

app = typer.Typer(no_args_is_help=True, help="Register and check the Avro contract in schemas/.")

DirOpt = Annotated[Path | None, typer.Option("--dir", help="Schema folder (default: schemas/).",
                                              exists=True, file_okay=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _client() -> RegistryClient:
    return RegistryClient.from_settings(bus_settings())


@app.command()
def register(directory: DirOpt = None, json: JsonOpt = False) -> None:
    """Register every record type under its record-name subject (idempotent).

    Example: liaison schemas register
    """
    async def go() -> list[list[str]]:
        async with _client() as client:
            regs = await register_all(client, load_catalog(directory))
        return [[r.subject, str(r.schema_id), str(r.version), "registered" if r.created else "unchanged"]
                for r in regs]

    try:
        rows = asyncio.run(go())
    except LiaisonError as exc:
        fail(str(exc))
    Out(json=json).table("schemas", ["subject", "id", "version", "result"], rows)


@app.command()
def check(directory: DirOpt = None, json: JsonOpt = False) -> None:
    """Say whether the working tree's schemas may be registered; exit 1 when one may not.

    Example: liaison schemas check --dir schemas/
    """
    async def go() -> list[list[str]]:
        catalog = load_catalog(directory)
        rows = []
        async with _client() as client:
            for name in RECORD_TYPES:
                subject, schema = subject_for(name), catalog.standalone_json(name)
                if await client.lookup(subject, schema) is not None:
                    rows.append([subject, "unchanged", ""])
                    continue
                ok, messages = await client.is_compatible(subject, schema)
                level = await client.get_compatibility(subject)
                rows.append([subject, f"compatible ({level})" if ok else f"INCOMPATIBLE ({level})",
                             "; ".join(messages)[:300]])
        return rows

    try:
        rows = asyncio.run(go())
    except LiaisonError as exc:
        fail(str(exc))
    Out(json=json).table("schema check", ["subject", "result", "detail"], rows)
    if any(r[1].startswith("INCOMPATIBLE") for r in rows):
        raise typer.Exit(1)
