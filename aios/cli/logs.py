"""``aios logs``: read (and follow) the log of the processes ``aios up`` supervises."""

from __future__ import annotations

import json
import sys
import threading

import click

from aios.cli.common import settings_or_exit
from aios.cli.output import emit_json, json_option
from aios.devstack.logfile import follow, log_path, read
from aios.streams.logs import render_text


@click.command()
@click.option("--follow", "-f", "following", is_flag=True, help="Keep printing new lines until Ctrl-C.")
@click.option("--processor", "-p", default=None,
              help="Only this process or processor (orchestrator, agents, agents:backend, history, api, …).")
@click.option("--task", "-t", default=None, help="Only lines about this task id.")
@click.option("--lines", "-n", default=100, show_default=True, type=click.IntRange(0),
              help="How many past lines to show first.")
@json_option
def logs(following: bool, processor: str | None, task: str | None, lines: int, as_json: bool) -> None:
    """The supervisor's log: every process of `aios up`, one line per event (time, level, process, ids).

    With --json: the past lines as one document on the last line; with --follow too, one JSON
    object per line as they come.
    """
    settings = settings_or_exit()
    path = log_path(settings)
    if not path.exists():
        raise click.ClickException(f"no log at {path}: `aios up` writes it (with this AIOS_DATA_DIR)")
    past = read(path, processor=processor, task=task)[-lines:] if lines else []
    if as_json and not following:
        emit_json({"path": str(path), "count": len(past), "lines": past})
        return
    for doc in past:
        _print(doc, as_json)
    if not following:
        return
    stop = threading.Event()
    try:
        for doc in follow(path, stop, processor=processor, task=task):
            _print(doc, as_json)
    except KeyboardInterrupt:
        stop.set()


def _print(doc: dict[str, object], as_json: bool) -> None:
    sys.stdout.write((json.dumps(doc, ensure_ascii=False, default=str) if as_json else render_text(doc)) + "\n")
    sys.stdout.flush()
