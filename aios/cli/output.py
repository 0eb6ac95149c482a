"""How every CLI command prints: rich tables for people, one JSON document (last line) with --json."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)  # status lines stay whole in logs

json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document on the last line.")


def utc_time(ms: int | float) -> str:
    """Epoch milliseconds as a person reads them in a table or a line: ``2026-12-07 10:30:31``."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000))


def emit_json(document: Any) -> None:
    """Print ``document`` as a single JSON line on stdout (always the last line)."""
    sys.stdout.write(json.dumps(document, default=str, separators=(",", ":")) + "\n")
    sys.stdout.flush()


@contextmanager
def progress(description: str, total: int, *, enabled: bool = True) -> Iterator[Any]:
    """A rich progress bar on a terminal (stderr); silent when not a TTY or disabled."""
    show = enabled and err_console.is_terminal
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        disable=not show,
        transient=True,
    )
    with bar:
        task = bar.add_task(description, total=total)

        class _Advance:
            def advance(self, n: int = 1) -> None:
                bar.advance(task, n)

        yield _Advance()
