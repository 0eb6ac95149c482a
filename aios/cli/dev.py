"""`aios dev up|down|status`: the local Kafka (KRaft) and Redis under the data directory."""

from __future__ import annotations

from collections.abc import Callable

import click
from rich.table import Table

from aios import devstack
from aios.cli.output import console, emit_json, json_option
from aios.schemas.errors import ConfigError
from aios.streams.errors import StackError
from aios.streams.settings import Settings, load_settings

_STATE_STYLE = {"running": "green", "external": "cyan", "stopped": "dim"}


def _run(action: Callable[[Settings], devstack.StackReport], title: str, as_json: bool) -> None:
    try:
        report = action(load_settings())
    except (StackError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        emit_json(report.to_dict())
        return
    table = Table(title=f"{title} ({report.elapsed_s:.1f} s) — {report.data_dir}", title_justify="left")
    for column in ("service", "state", "pid", "address", "action"):
        table.add_column(column)
    for svc in report.services:
        style = _STATE_STYLE.get(svc.state, "")
        pid = "-" if svc.pid is None else str(svc.pid)
        table.add_row(svc.name, f"[{style}]{svc.state}[/]", pid, svc.address, svc.action)
    console.print(table)


@click.group()
def dev() -> None:
    """Run the local dev stack: a Kafka broker (KRaft; or a local cluster) and Redis, no Docker."""


@dev.command()
@click.option(
    "--timeout", "timeout_s", type=float, default=60.0, show_default=True, help="Seconds to wait for Kafka."
)
@click.option(
    "--brokers", type=click.IntRange(1, 9), default=None,
    help="Brokers to start (AIOS_KAFKA_LOCAL_BROKERS): 3 makes a local KRaft cluster whose brokers are also "
    "its controllers; AIOS_KAFKA_BOOTSTRAP then lists one loopback address per broker.")
@json_option
def up(timeout_s: float, brokers: int | None, as_json: bool) -> None:
    """Start Kafka and Redis unless they already answer; wait until all do."""
    def start(settings: Settings) -> devstack.StackReport:
        if brokers is not None:
            settings = settings.replace(kafka_local_brokers=brokers)
        return devstack.up(settings, kafka_timeout_s=timeout_s)
    _run(start, "dev stack up", as_json)


@dev.command()
@json_option
def down(as_json: bool) -> None:
    """Stop the Kafka broker(s) and Redis this data directory started (external ones are left alone)."""
    _run(devstack.down, "dev stack down", as_json)


@dev.command()
@json_option
def status(as_json: bool) -> None:
    """Show each service: running (ours), external (answering, not ours) or stopped."""
    _run(devstack.status, "dev stack", as_json)
