"""``aios trace``: a task's whole story from the history in ClickHouse, without a tracing backend."""

from __future__ import annotations

from typing import Any

import click
from rich.markup import escape
from rich.tree import Tree

from aios.cli.common import settings_or_exit
from aios.cli.output import console, emit_json, json_option
from aios.cli.stats import _store
from aios.connectors.history.story import Attempt, Hop, Story, story
from aios.schemas.errors import AiosError


@click.command("trace")
@click.argument("trace_or_task")
@json_option
def trace_cmd(trace_or_task: str, as_json: bool) -> None:
    """Rebuild a trace's (or task's) story from the history: every event in order with the process that
    produced it, its partition and offset, each LLM call (tokens, cost, latency) and tool call, retries,
    and the time between hops, as a tree with durations."""
    settings = settings_or_exit()
    store = _store(settings, read=True)
    try:
        found = story(store, trace_or_task)
    except AiosError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        store.close()
    if not found.hops:
        raise click.ClickException(
            f"no event of trace or task {trace_or_task!r} is in the history ({store.engine}): check the id (aios "
            "submit prints both), and that the history sink runs (aios up, or aios worker history)")
    if as_json:
        emit_json({"engine": store.engine, **found.to_dict()})
        return
    console.print(render(found))


def render(found: Story) -> Tree:
    """The story as a tree: the top-level hops and each attempt, with their hops beneath."""
    traces = ", ".join(found.trace_ids)
    root = Tree(f"[bold]trace {traces}[/bold] · {len(found.hops)} events · {_ms(found.duration_ms)}"
                + (" · [yellow]cut at the first 5000 events[/yellow]" if found.truncated else ""))
    for item, hops in found.tree():
        if isinstance(item, Attempt):
            branch = root.add(_attempt_line(item))
            for hop in hops:
                branch.add(_hop_line(hop))
        else:
            root.add(_hop_line(item))
    return root


def _attempt_line(attempt: Attempt) -> str:
    last = attempt.hops[-1]
    outcome = last.status if last.event_type == "TaskResult" else "unfinished"
    retry = " [yellow](retry)[/yellow]" if attempt.number > 1 else ""
    return f"[bold]attempt {attempt.number}[/bold]{retry} · {_ms(attempt.duration_ms)} · {outcome}"


def _hop_line(hop: Hop) -> str:
    where = f"{hop.topic}[{hop.partition}]@{hop.offset}"
    producer = hop.producer or hop.detail.get("agent_id") or hop.detail.get("sender") or "?"
    return (f"[dim]+{_ms(hop.gap_ms)}[/dim] [cyan]{escape(hop.label())}[/cyan] {escape(_detail(hop))} "
            f"[dim]{escape(where)} by {escape(str(producer))}[/dim]")


def _detail(hop: Hop) -> str:
    d: dict[str, Any] = hop.detail
    if hop.event_type == "LlmCall":
        ttft = f", ttft {_ms(d['ttft_ms'])}" if d.get("ttft_ms") is not None else ""
        return (f"{d.get('input_tokens', 0)}→{d.get('output_tokens', 0)} tokens, ${d.get('cost_usd', 0):.6f}, "
                f"{_ms(d.get('latency_ms', 0))}{ttft}, {d.get('strategy', '')} via "
                f"{' → '.join(d.get('fallback_chain') or []) or d.get('provider', '')}")
    if hop.event_type == "AgentMessage" and d.get("tool"):
        return f"step {d.get('step', 0)}, {d.get('chars', 0)} chars"
    if hop.event_type == "TaskResult" and d:
        error = f", {d['error_type']}" if d.get("error_type") else ""
        return f"attempt {d.get('attempt', '?')}{error}" + (f", {_ms(d['latency_ms'])}" if d.get("latency_ms") else "")
    if hop.event_type == "MemoryEvent" and d:
        return f"{d.get('kind', '')} to {d.get('scope', '')}, {d.get('tokens', 0)} tokens"
    return ""


def _ms(value: float) -> str:
    return f"{value / 1000:.2f}s" if value >= 1000 else f"{value:.0f}ms"
