"""``aios memory show|search|rebuild``: read a rolling context, recall from vector memory, and
rebuild Redis and Qdrant from ``aios.memory``."""

from __future__ import annotations

import asyncio
import dataclasses

import click
from rich.table import Table

from aios.cli.common import settings_or_exit
from aios.cli.output import console, emit_json, json_option, progress
from aios.connectors.context.windows import SCOPES, Context
from aios.schemas.errors import AiosError
from aios.streams.engine.runtime import open_context, open_vector_memory


@click.group()
def memory() -> None:
    """Agent memory: rolling contexts (Redis) and vector recall (Qdrant)."""


@memory.command("show")
@click.argument("scope", type=click.Choice(SCOPES))
@click.argument("scope_id")
@json_option
def show(scope: str, scope_id: str, as_json: bool) -> None:
    """Print the context of SCOPE ID: its running summary and turns, oldest first."""
    settings = settings_or_exit()

    async def read() -> Context:
        context = open_context(settings)
        try:
            return await context.read(scope, scope_id)
        finally:
            await context.aclose()

    try:
        window = asyncio.run(read())
    except AiosError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        emit_json({"scope": scope, "scope_id": scope_id, "summary": window.summary, "turns": window.turns,
                   "tokens": window.tokens})
        return
    if not window.turns and window.summary is None:
        console.print(f"no context for {scope} {scope_id} (never written, or expired)")
        return
    if window.summary is not None:
        console.print(f"[bold]summary[/bold] (#{window.summary.get('seq')}, {window.summary.get('tokens')} tokens)")
        console.print(window.summary["content"], markup=False)
    table = Table("memory id", "speaker", "tokens", "content", title=f"{len(window.turns)} turns, "
                  f"{window.tokens} tokens")
    for turn in window.turns:
        table.add_row(str(turn["memory_id"]), str(turn["speaker"]), str(turn["tokens"]), str(turn["content"]))
    console.print(table)


@memory.command("search")
@click.argument("text")
@click.option("--project", default=None, help="Only memories of this project.")
@click.option("--top-k", default=5, show_default=True, type=click.IntRange(1, 100))
@click.option("--threshold", default=None, type=float, help="Minimum cosine similarity.")
@json_option
def search(text: str, project: str | None, top_k: int, threshold: float | None, as_json: bool) -> None:
    """Recall the memories most similar to TEXT, with scores (needs AIOS_VECTOR_MEMORY data)."""
    settings = settings_or_exit()
    try:
        with open_vector_memory(settings) as vectors:
            hits = vectors.search(text, top_k, project=project, score_threshold=threshold)
    except AiosError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        emit_json({"query": text, "project": project,
                   "hits": [{"id": h.id, "score": h.score, "text": h.text, "payload": h.payload} for h in hits]})
        return
    table = Table("score", "memory id", "project", "kind", "text")
    for h in hits:
        table.add_row(f"{h.score:.3f}", h.id, str(h.payload.get("project")), str(h.payload.get("kind")), h.text)
    console.print(table)
    if not hits:
        console.print("no memories matched; is AIOS_VECTOR_MEMORY on for the memory processor?")


@memory.command("rebuild")
@click.option("--scope", type=click.Choice(SCOPES), default=None, help="Only windows of this scope.")
@json_option
def rebuild(scope: str | None, as_json: bool) -> None:
    """Replay the memory topic into fresh Redis keys (and Qdrant collection), then swap them in.

    Never produces to any topic. Stop the memory processor first: a local Qdrant folder is
    single-process, and writes it makes meanwhile may be replaced by the swap.
    """
    from aios.streams.jobs.memory_rebuild import backlog, rebuild_memory

    settings = settings_or_exit()
    try:
        total = backlog(settings)
        with progress("memory events", total=total, enabled=not as_json) as bar:
            report = asyncio.run(rebuild_memory(settings, scope=scope, on_progress=bar.advance))
    except AiosError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        emit_json(dataclasses.asdict(report))
        return
    console.print(f"rebuilt {report.windows} windows from {report.events} events of {report.topic} "
                  f"in {report.seconds:.1f}s: {report.keys_swapped} Redis keys swapped in, "
                  f"{report.expired_windows} windows already expired"
                  + (f", {report.vectors} vectors into {report.collection}" if report.vectors is not None else ""))
