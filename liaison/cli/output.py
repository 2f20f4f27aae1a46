"""Output for humans (tables and colour on a TTY only) and for scripts (`--json`)."""

from __future__ import annotations

import json as jsonlib
import sys
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table


def fail(message: str, code: int = 1) -> NoReturn:
    """One clear line on stderr and a non-zero exit: the CLI's only way to report a fault."""
    typer.echo(f"liaison: {message}", err=True)
    raise SystemExit(code)


class Out:
    """Writes tables or JSON to stdout; colour and progress only when stdout is a terminal."""

    def __init__(self, *, json: bool = False) -> None:
        self.json = json
        self.tty = sys.stdout.isatty()
        self.console = Console(highlight=False, no_color=not self.tty,
                               width=None if self.tty else 200)
        self.err = Console(stderr=True, highlight=False, no_color=not sys.stderr.isatty())

    def table(self, title: str, columns: list[str], rows: list[list[str]],
              *, records: list[dict[str, Any]] | None = None) -> None:
        if self.json:
            typer.echo(jsonlib.dumps(records if records is not None else
                                     [dict(zip(columns, r, strict=True)) for r in rows],
                                     default=str, indent=None))
            return
        table = Table(title=title if self.tty else None, box=None, show_edge=self.tty,
                      header_style="bold" if self.tty else "")
        for col in columns:
            table.add_column(col)
        for row in rows:
            table.add_row(*row)
        self.console.print(table)

    def progress(self, message: str) -> None:
        if self.tty and not self.json:
            self.err.print(f"[dim]… {message}[/dim]")
