"""Output helpers shared by every command: one JSON document with --json, a table for people otherwise."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import click


def json_option(fn: Any) -> Any:
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")(fn)


def emit(data: Any, *, as_json: bool, columns: Sequence[str] | None = None, title: str | None = None) -> None:
    """Print ``data``: JSON when asked, else a rich table (list of dicts) or key/value lines (dict)."""
    if as_json:
        click.echo(json.dumps(data, default=str, indent=None, separators=(",", ":")))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(file=sys.stdout)
    if isinstance(data, list):
        cols = list(columns or (data[0].keys() if data else []))
        table = Table(title=title)
        for c in cols:
            table.add_column(c)
        for row in data:
            table.add_row(*(_cell(row.get(c)) for c in cols))
        console.print(table)
        return
    if isinstance(data, dict):
        if title:
            console.print(f"[bold]{title}[/bold]")
        for k, v in data.items():
            console.print(f"{k}: {_cell(v)}")
        return
    console.print(str(data))


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, dict | list):
        return json.dumps(v, default=str)
    return str(v)


def progress(items: Iterable[Any], *, label: str, total: int | None = None, enabled: bool = True) -> Iterable[Any]:
    """A progress bar on stderr for long operations (silent with --json or when not a terminal)."""
    if not enabled:
        yield from items
        return
    from rich.progress import track

    yield from track(items, description=label, total=total, console=None, transient=True)
