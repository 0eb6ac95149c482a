"""``aios dlq list`` and ``aios dlq replay``: read dead letters, and send them back after a fix."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import click
import redis.asyncio as aioredis
from rich.table import Table

from aios.cli.common import settings_or_exit
from aios.cli.output import console, emit_json, json_option, progress, utc_time
from aios.cli.stats import parse_since
from aios.connectors.context.replays import ReplayLedger
from aios.schemas.errors import AiosError
from aios.streams.jobs.dlq_replay import Letter, LetterFilter, Outcome, Replayer, read_letters
from aios.streams.settings import Settings


@click.group()
def dlq() -> None:
    """Dead letters: list them, and replay them to their topic (at most AIOS_DLQ_REPLAY_LIMIT times each)."""


def _since_ms(since: str | None) -> int | None:
    return None if since is None else int((time.time() - parse_since(since)) * 1000)


async def _with_ledger(settings: Settings, work: Any) -> Any:
    redis = aioredis.Redis.from_url(settings.stores.redis_url, socket_timeout=5)
    try:
        return await work(ReplayLedger(redis, settings.kafka.topic_prefix))
    finally:
        await redis.aclose()


@dlq.command("list")
@click.option("--since", default=None, help="Only letters from this window: 30m, 1h, 7d, …")
@click.option("--processor", default=None, help="Only letters this processor wrote (e.g. orchestrator, agents).")
@click.option("--reason", default=None, help="Only letters whose error type or message contains this text.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100_000), help="The latest N.")
@json_option
def list_cmd(since: str | None, processor: str | None, reason: str | None, limit: int, as_json: bool) -> None:
    """List dead letters, oldest first, with how often each record was replayed."""
    settings = settings_or_exit()
    where = LetterFilter(_since_ms(since), processor, reason)
    try:
        letters = read_letters(settings, where, limit)
        counts = asyncio.run(_with_ledger(settings, lambda ledger: ledger.counts([x.fingerprint for x in letters])))
    except AiosError as exc:
        raise click.ClickException(str(exc)) from exc
    docs = [letter.doc(counts.get(letter.fingerprint, 0)) for letter in letters]
    if as_json:
        emit_json({"letters": docs, "replay_limit": settings.observability.dlq_replay_limit})
        return
    table = Table("time", "id", "source", "processor", "reason", "replays", "first bytes")
    for d in docs:
        table.add_row(utc_time(d["timestamp"]), d["id"], f"{d['source_topic']}[{d['source_partition']}]@{d['source_offset']}",
                      d["processor"], f"{d['error_type']}: {d['reason']}"[:120], str(d["replays"]),
                      f"{d['preview_format']}: {d['preview']}"[:60])
    console.print(table)
    console.print(f"{len(docs)} dead letters")


@dlq.command("replay")
@click.option("--id", "ids", multiple=True, help="A dead letter's id (repeatable), as `aios dlq list` shows it.")
@click.option("--since", default=None, help="Every letter from this window (30m, 1h, 7d), with the filters below.")
@click.option("--processor", default=None, help="With --since: only this processor's letters.")
@click.option("--reason", default=None, help="With --since: only letters whose error contains this text.")
@click.option("--to", "to", default=None, help="Send to this topic instead of each letter's source topic.")
@click.option("--dry-run", is_flag=True, help="Show what would be sent, and refused; send nothing.")
@json_option
def replay_cmd(ids: tuple[str, ...], since: str | None, processor: str | None, reason: str | None, to: str | None,
               dry_run: bool, as_json: bool) -> None:
    """Send dead letters back to their source topic (or --to), each with replay headers; a record
    replayed AIOS_DLQ_REPLAY_LIMIT times is refused."""
    if bool(ids) == (since is not None):
        raise click.UsageError("choose the letters: --id ID (repeatable) or --since WINDOW")
    settings = settings_or_exit()
    where = LetterFilter(_since_ms(since), processor, reason, frozenset(ids))
    try:
        letters = read_letters(settings, where, limit=0)
        missing = sorted(set(ids) - {x.event_id for x in letters})
        if missing:
            raise click.ClickException(f"no dead letter with id {', '.join(missing)} on the DLQ "
                                       "(see `aios dlq list`)")
        outcomes = asyncio.run(_with_ledger(settings, lambda ledger: _replay(settings, ledger, letters, to,
                                                                               dry_run, not as_json)))
    except AiosError as exc:
        raise click.ClickException(str(exc)) from exc
    refused = [o for o in outcomes if o.outcome == "refused"]
    if as_json:
        emit_json({"dry_run": dry_run, "outcomes": [o.doc() for o in outcomes],
                   "replay_limit": settings.observability.dlq_replay_limit})
    else:
        table = Table("id", "outcome", "to", "replays", "reason")
        for o in outcomes:
            table.add_row(o.letter.event_id, o.outcome, o.topic, str(o.count), o.reason)
        console.print(table)
    if refused:
        raise click.ClickException(f"{len(refused)} of {len(outcomes)} dead letters refused: {refused[0].reason}")


async def _replay(settings: Settings, ledger: ReplayLedger, letters: list[Letter], to: str | None, dry_run: bool,
                  show: bool) -> list[Outcome]:
    replayer = Replayer(settings, ledger, by="cli")
    try:
        with progress("replaying" if not dry_run else "checking", len(letters), enabled=show) as bar:
            out = await replayer.replay(letters, to, dry_run, advance=bar.advance)
    finally:
        replayer.close()
    return out
