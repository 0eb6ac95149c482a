"""``aios drain`` and ``aios reload``: broadcasts to the agent workers over the control topic."""

from __future__ import annotations

import click

from aios.cli.common import settings_or_exit
from aios.cli.output import console, emit_json, json_option
from aios.schemas.checks import check_control
from aios.schemas.errors import AiosError
from aios.schemas.events import event_doc
from aios.streams.kafka import EventProducer
from aios.streams.processors.agent_control import BROADCAST_PROJECT, RELOADABLE, broadcast_event
from aios.streams.topics import Topics


def _broadcast(action: str, target: str | None, reason: str, as_json: bool) -> None:
    settings = settings_or_exit()
    try:
        event = broadcast_event(action, target, reason, "cli")
        check_control(event)
        producer = EventProducer(settings)
        producer.send(Topics.from_settings(settings).control, "Control", event, key=BROADCAST_PROJECT)
        producer.flush()
    except AiosError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        emit_json(event_doc(event))
    else:
        console.print(f"{action} sent to {target or 'every agent worker'}")


@click.command()
@click.argument("agent_id", required=False)
@click.option("--all", "every", is_flag=True, help="Drain every agent worker.")
@click.option("--reason", default="drained by the operator", show_default=True)
@json_option
def drain(agent_id: str | None, every: bool, reason: str, as_json: bool) -> None:
    """Drain an agent worker (its id from `aios agents`), or every one with --all: it takes no new
    assignment, finishes those in flight, and exits (a supervisor starts a fresh one)."""
    if (agent_id is None) == (not every):
        raise click.UsageError("name one agent worker (see `aios agents`), or pass --all")
    _broadcast("drain", agent_id, reason, as_json)


@click.command()
@click.argument("what", type=click.Choice([*RELOADABLE, "all"]), default="all")
@click.option("--reason", default="reloaded by the operator", show_default=True)
@json_option
def reload(what: str, reason: str, as_json: bool) -> None:
    """Make every agent worker read the roles (agents/roles.json) or the LLM config (AIOS_LLM_CONFIG)
    again; a broken file is refused and the one in use kept."""
    _broadcast("reload", None if what == "all" else what, reason, as_json)
