"""``aios db migrate`` and ``aios stats``: the ClickHouse schema, and what the history says.

With the embedded store, these open the chdb data directory under AIOS_DATA_DIR, which one process
may hold at a time: run them while no ``aios up`` / ``aios worker history`` uses that directory,
or point every process at a ClickHouse server (AIOS_CLICKHOUSE_URL).
"""

from __future__ import annotations

import re

import click
from rich.table import Table

from aios.cli.common import settings_or_exit
from aios.cli.output import console, emit_json, json_option
from aios.connectors.history import HistoryStore, open_store
from aios.schemas.errors import AiosError
from aios.streams.settings import Settings

_SINCE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str) -> int:
    """'90s', '15m', '1h', '7d', '2w' → seconds."""
    match = _SINCE.match(text)
    if match is None or int(match.group(1)) == 0:
        raise click.BadParameter(f"{text!r}: use a positive number and a unit, e.g. 30m, 1h, 7d")
    return int(match.group(1)) * _UNIT_S[match.group(2)]


def _store(settings: Settings, *, migrate: bool = True, read: bool = False) -> HistoryStore:
    """The history store; with ``read``, one that does not exist yet is an error (open_store's ``create``)."""
    try:
        return open_store(settings.stores.clickhouse_url, settings.stores.data_dir, ttl_days=settings.stores.history_ttl_days,
                          migrate=migrate, create=not read)
    except AiosError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group()
def db() -> None:
    """The ClickHouse history store."""


@db.command("migrate")
@json_option
def migrate_cmd(as_json: bool) -> None:
    """Apply pending schema migrations (idempotent)."""
    settings = settings_or_exit()
    store = _store(settings, migrate=False)
    try:
        report = store.migrate()
    except AiosError as exc:
        raise click.ClickException(str(exc)) from exc
    doc = {"engine": store.engine, "applied": report.applied, "already_applied": report.already_applied}
    if as_json:
        emit_json(doc)
        return
    console.print(f"{store.engine}: applied {report.applied or 'none'}; "
                  f"already applied {report.already_applied or 'none'}")


@click.command()
@click.option("--project", default=None, help="Only this project.")
@click.option("--since", "since", default="1h", show_default=True, help="Window: 30m, 1h, 7d, …")
@json_option
def stats(project: str | None, since: str, as_json: bool) -> None:
    """Throughput, latency, success rate, cost, top failures and per-role load from the history."""
    from aios.connectors.history.queries import stats as run_stats

    since_s = parse_since(since)
    settings = settings_or_exit()
    store = _store(settings, read=True)
    try:
        result = run_stats(store, since_s=since_s, project_id=project)
    except AiosError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        emit_json({"engine": store.engine, **result.to_dict()})
        return
    lat = result.latency_ms
    rate = "n/a" if result.success_rate is None else f"{result.success_rate:.1%}"
    console.print(f"[bold]last {since}[/bold]{f' · project {project}' if project else ''} · {store.engine}")
    console.print(f"submitted {result.submitted} · results {result.results} ({result.tasks_per_min:g}/min) · "
                  f"success {rate} · latency p50 {lat['p50']} p95 {lat['p95']} p99 {lat['p99']} ms · "
                  f"dead letters {result.dead_letters}")
    if result.cost:
        table = Table("provider", "model", "calls", "tokens in", "tokens out", "cost USD", title="cost")
        for c in result.cost:
            table.add_row(c["provider"], c["model"], str(c["calls"]), str(c["input_tokens"]),
                          str(c["output_tokens"]), f"{c['cost_usd']:.4f}")
        console.print(table)
    if result.roles:
        table = Table("role", "assigned", "results", "failed", "p50 ms", title="load by role")
        for r in result.roles:
            table.add_row(r["role"], str(r["assigned"]), str(r["results"]), str(r["failed"]), str(r["p50_ms"]))
        console.print(table)
    if result.top_failures:
        table = Table("count", "role", "error", title="top failures")
        for f in result.top_failures:
            table.add_row(str(f["count"]), f["role"], f["error"])
        console.print(table)
