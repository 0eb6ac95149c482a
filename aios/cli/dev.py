"""`aios dev up|down|status`: the local Kafka (KRaft) and Redis under the data directory; `aios dev llm`:
a latency-simulating LLM server for demos, tests and benches."""

from __future__ import annotations

import json
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


@dev.command("llm")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback by default).")
@click.option("--port", default=8100, show_default=True, help="Port; 0 picks a free one.")
@click.option("--ttft", "ttft_s", default=1.0, show_default=True, help="Seconds to the first token.")
@click.option("--stream", "stream_s", default=0.5, show_default=True, help="Seconds from the first token to the last.")
@click.option("--tokens", default=20, show_default=True, help="Text deltas (words) per answer.")
@click.option("--error-rate", default=0.0, show_default=True, help="Share of calls answered 500.")
@click.option("--rate-limit-rate", default=0.0, show_default=True, help="Share of calls answered 429.")
@click.option("--retry-after", "retry_after_s", default=1.0, show_default=True, help="retry-after of a 429 (seconds).")
@json_option
def llm(host: str, port: int, ttft_s: float, stream_s: float, tokens: int, error_rate: float, rate_limit_rate: float,
        retry_after_s: float, as_json: bool) -> None:
    """Serve a latency-simulating LLM (OpenAI and Anthropic wire formats) until Ctrl-C or SIGTERM.

    Point AIOS at it with AIOS_LLM=openai:gpt-4o-mini AIOS_OPENAI_API_KEY=any AIOS_OPENAI_BASE_URL=<url>.
    GET /stats counts calls, the peak in flight and connections closed early.
    """
    import asyncio

    from aios.agents.llm.servers.latency import LatencyProfile, LatencyServer
    from aios.streams.engine.loops import loop_factory

    try:
        profile = LatencyProfile(ttft_s=ttft_s, stream_s=stream_s, tokens=tokens, error_rate=error_rate,
                                 rate_limit_rate=rate_limit_rate, retry_after_s=retry_after_s)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    server = LatencyServer(profile, host=host, port=port)

    def ready(s: LatencyServer) -> None:
        doc = {"openai_base_url": s.base_url, "anthropic_base_url": s.anthropic_base_url,
               "stats_url": f"http://{s.host}:{s.port}/stats", "profile": profile.__dict__}
        # One line on stderr that a supervising process (aios bench capacity) waits for and parses.
        click.echo("aios: ready " + json.dumps(doc), err=True)
        if not as_json:
            console.print(f"aios: ready — OpenAI {s.base_url}, Anthropic {s.anthropic_base_url}, "
                          f"stats {doc['stats_url']} (ttft {ttft_s:g}s, stream {stream_s:g}s, {tokens} tokens)")

    try:
        # uvloop where installed: the server's own CPU per streamed call shares the machine with
        # the pipeline it measures (aios bench capacity).
        with asyncio.Runner(loop_factory=loop_factory(_event_loop())) as runner:
            runner.run(server.serve(ready))
    except OSError as exc:
        raise click.ClickException(f"cannot serve on {host}:{port}: {exc}") from exc
    if as_json:
        emit_json(server.stats.summary())
    else:
        console.print(f"served {server.stats.calls} calls, at most {server.stats.peak_in_flight} at once")


def _event_loop() -> str:
    """AIOS_EVENT_LOOP for the LLM server (auto when the settings cannot be read: the server needs none)."""
    try:
        return load_settings().processing.event_loop
    except ConfigError:
        return "auto"

