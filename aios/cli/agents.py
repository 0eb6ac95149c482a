"""``aios agents``: the live agent workers, from the compacted agents topic."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from aios.cli.common import settings_or_exit
from aios.cli.output import console, emit_json, json_option
from aios.schemas.errors import AiosError
from aios.schemas.events import event_doc, now_ms, to_ms
from aios.streams.readmodels.agent_registry import GONE, is_forgotten, is_stale, shown_state
from aios.streams.readmodels.task_client import latest_by
from aios.streams.settings import Settings
from aios.streams.topics import Topics


def agent_statuses(settings: Settings, *, timeout_s: float = 10.0, at_ms: int | None = None) -> list[dict[str, Any]]:
    """The latest AgentStatus of every agent not yet forgotten (silent less than
    AIOS_AGENT_FORGET_AFTER_S, and not tombstoned), each with ``stale`` (not stopped, yet silent for
    more than three heartbeat intervals: killed without a chance to say so) and ``shown`` (its
    state, or ``gone`` when stale)."""
    latest = latest_by(settings, Topics.from_settings(settings).agents, "agent_id", timeout_s=timeout_s, to_end=True)
    now = now_ms() if at_ms is None else at_ms
    forget_after = settings.processing.agent_forget_after_s
    kept = [s for s in latest.values() if not is_forgotten(s, now, forget_after)]
    for status in kept:
        status["stale"] = is_stale(status, now)
        status["shown"] = shown_state(status, now)
        status["last_seen_s"] = round((now - to_ms(status["timestamp"])) / 1000, 1)
    return sorted(kept, key=lambda s: (s["shown"] in GONE | {"gone"}, s["agent_id"]))


@click.command()
@click.option("--all", "show_all", is_flag=True,
              help="Also list agents that failed, stopped or are gone (silent), until they are forgotten.")
@json_option
def agents(show_all: bool, as_json: bool) -> None:
    """Agent workers: state, roles, tasks in flight, version, host; silent ones shown as gone, then dropped."""
    settings = settings_or_exit()
    try:
        statuses = agent_statuses(settings)
    except AiosError as exc:
        raise click.ClickException(str(exc)) from exc
    shown = [s for s in statuses if show_all or s["shown"] not in GONE | {"gone"}]
    if as_json:
        emit_json({"agents": [event_doc(s) for s in shown]})
        return
    if not shown:
        console.print("no live agents (start one with `aios worker agents --role ROLE`; --all shows gone ones)")
        return
    table = Table("agent", "state", "roles", "in flight", "version", "host", "last seen")
    for s in shown:
        state = f"[red]gone[/red] (last said {s['state']})" if s["stale"] else s["state"]
        table.add_row(s["agent_id"], state, ",".join(s["roles"] or [s["role"]]), str(len(s["in_flight"])),
                      s["version"], s["host"], f"{s['last_seen_s']}s ago")
    console.print(table)
