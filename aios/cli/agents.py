"""``aios agents``: the live agent workers, from the compacted agents topic."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from aios.cli.common import settings_or_exit
from aios.cli.output import console, emit_json, json_option
from aios.schemas.errors import AiosError
from aios.schemas.events import event_doc, now_ms, to_ms
from aios.streams.readmodels.agent_registry import GONE, is_stale
from aios.streams.readmodels.task_client import latest_by
from aios.streams.settings import Settings
from aios.streams.topics import Topics


def agent_statuses(settings: Settings, *, timeout_s: float = 10.0, at_ms: int | None = None) -> list[dict[str, Any]]:
    """The latest AgentStatus of every agent, each with ``stale``: not stopped, yet silent for
    more than three heartbeat intervals (killed without a chance to say so)."""
    latest = latest_by(settings, Topics.from_settings(settings).agents, "agent_id", timeout_s=timeout_s, to_end=True)
    now = now_ms() if at_ms is None else at_ms
    for status in latest.values():
        status["stale"] = is_stale(status, now)
        status["last_seen_s"] = round((now - to_ms(status["timestamp"])) / 1000, 1)
    return sorted(latest.values(), key=lambda s: (s["state"] in GONE, s["agent_id"]))


@click.command()
@click.option("--all", "show_all", is_flag=True, help="Also list agents that stopped or failed.")
@json_option
def agents(show_all: bool, as_json: bool) -> None:
    """Agent workers: state, roles, tasks in flight, version, host; stale ones marked."""
    settings = settings_or_exit()
    try:
        statuses = agent_statuses(settings)
    except AiosError as exc:
        raise click.ClickException(str(exc)) from exc
    shown = [s for s in statuses if show_all or s["state"] not in GONE]
    if as_json:
        emit_json({"agents": [event_doc(s) for s in shown]})
        return
    if not shown:
        console.print("no live agents (start one with `aios worker agents --role ROLE`; --all shows stopped ones)")
        return
    table = Table("agent", "state", "roles", "in flight", "version", "host", "last seen")
    for s in shown:
        state = f"[red]{s['state']} (stale)[/red]" if s["stale"] else s["state"]
        table.add_row(s["agent_id"], state, ",".join(s["roles"] or [s["role"]]), str(len(s["in_flight"])),
                      s["version"], s["host"], f"{s['last_seen_s']}s ago")
    console.print(table)
