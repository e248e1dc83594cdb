"""Helpers shared by CLI commands: JSON documents and tables.

Tables fit the terminal when printed to one; piped or redirected, they keep their natural
width (never cut to 80 columns), unless ``$COLUMNS`` says otherwise.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

#: Width of a console that is not a terminal: wide enough that no table is cut, columns.
PIPE_WIDTH = 10_000


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def emit_json(document: Any) -> None:
    """Print one JSON document on stdout (non-finite floats become null)."""
    json.dump(_clean(document), sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def print_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a table on stdout for people."""
    table = Table(title=title, show_lines=False)
    first = rows[0] if rows else [None] * len(columns)
    for col, sample in zip(columns, first, strict=True):
        numeric = isinstance(sample, int | float) and not isinstance(sample, bool)
        table.add_column(col, justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*(fmt(v) for v in row))
    console(stderr=False).print(table)


def fmt(value: Any) -> str:
    """Format a cell: floats to 4 significant digits, None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "-"
        return f"{value:.4g}"
    return str(value)


def console(stderr: bool) -> Console:
    """A console on stdout or stderr: the terminal's width on a terminal, else as wide as
    ``$COLUMNS`` or wide enough for any table (rows are never cut or wrapped)."""
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty() or os.environ.get("COLUMNS"):
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=PIPE_WIDTH)


def progress_console() -> Console:
    """A console on stderr for progress, so stdout stays clean for --json."""
    return console(stderr=True)
