"""``aios bench …``: benchmarks print their figures and their baseline from the same run."""

from __future__ import annotations

import click
from rich.table import Table

from aios.cli.common import settings_or_exit
from aios.cli.output import console, emit_json, json_option, progress
from aios.schemas.errors import AiosError


@click.group()
def bench() -> None:
    """Benchmarks (figures go in docs/benchmarks.md)."""


@bench.command("pipeline")
@click.option("--tasks", default=2000, show_default=True, help="Tasks in the throughput burst.")
@click.option("--paced", default=1000, show_default=True, help="Tasks sent at --rate for the latency run.")
@click.option("--rate", default=100.0, show_default=True, help="Offered load (tasks/s) for the latency run.")
@click.option("--mode", type=click.Choice(["embedded", "distributed"]), default="embedded", show_default=True,
              help="embedded: `aios up` (it supervises one process per processor group, the API and chdb's owner "
              "included); distributed: one `aios worker` process per processor.")
@json_option
def pipeline_cmd(tasks: int, paced: int, rate: float, mode: str, as_json: bool) -> None:
    """Tasks through orchestrator and agent (offline provider) vs raw confluent-kafka."""
    from aios.bench.pipeline import bench_pipeline

    if tasks < 1 or paced < 1 or rate <= 0:
        raise click.BadParameter("--tasks and --paced must be ≥ 1 and --rate > 0")
    settings = settings_or_exit()
    try:
        with progress("events", total=2 * (tasks + paced + min(200, paced)), enabled=not as_json) as bar:
            doc = bench_pipeline(settings, tasks=tasks, paced=paced, rate=rate, mode=mode,
                                 tick=bar.advance)
    except AiosError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        emit_json(doc)
        return
    table = Table("run", "burst tasks/s", f"p50 ms @ {rate:g}/s", "p99 ms", "max ms")
    for name in ("pipeline", "raw_kafka"):
        f = doc[name]
        table.add_row(name, f"{f['throughput_per_s']:.0f}", f"{f['p50_ms']:.1f}", f"{f['p99_ms']:.1f}",
                      f"{f['max_ms']:.1f}")
    console.print(table)
    console.print(f"pipeline/raw throughput: {doc['ratio']['throughput_pipeline_over_raw']:.3f}; "
                  f"p50 ratio: {doc['ratio']['p50_pipeline_over_raw']}")


@bench.command("capacity")
@click.option("--tasks", default=600, show_default=True, help="JSON tasks sent at once.")
@click.option("--ttft", "ttft_s", default=1.0, show_default=True, help="The LLM's time to first token (s).")
@click.option("--stream", "stream_s", default=0.5, show_default=True, help="The LLM's streaming time (s).")
@click.option("--tokens", default=20, show_default=True, help="Text deltas per answer.")
@click.option("--mode", type=click.Choice(["embedded", "distributed"]), default="embedded", show_default=True,
              help="embedded: `aios up`; distributed: one `aios worker` per processor, --agent-workers agent workers.")
@click.option("--in-flight", default=600, show_default=True, help="AIOS_AGENT_MAX_IN_FLIGHT of each agent worker.")
@click.option("--queued", default=2000, show_default=True,
              help="Then this many tasks at once, for the agent's RSS with a backlog (0: skip).")
@click.option("--agent-workers", default=2, show_default=True, help="Agent workers in distributed mode.")
@json_option
def capacity_cmd(tasks: int, ttft_s: float, stream_s: float, tokens: int, mode: str, in_flight: int, queued: int,
                 agent_workers: int, as_json: bool) -> None:
    """JSON tasks through the pipeline against a latency-simulating LLM (`aios dev llm`), beside the
    offline pipeline (the CPU ceiling) and raw confluent-kafka."""
    from aios.bench.capacity import bench_capacity

    if tasks < 1 or queued < 0 or in_flight < 1 or agent_workers < 1 or ttft_s < 0 or stream_s < 0 or tokens < 1:
        raise click.BadParameter("--tasks, --in-flight, --agent-workers and --tokens must be ≥ 1; the rest ≥ 0")
    settings = settings_or_exit()
    try:
        total = 2 * tasks + min(200, tasks) * 2 + tasks * 2 + queued
        with progress("tasks", total=total, enabled=not as_json) as bar:
            doc = bench_capacity(settings, tasks=tasks, ttft_s=ttft_s, stream_s=stream_s, tokens=tokens, mode=mode,
                                 in_flight=in_flight, queued=queued, agent_workers=agent_workers, tick=bar.advance)
    except AiosError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        emit_json(doc)
        return
    table = Table("run", "tasks/s", "p50 ms", "p99 ms", "peak calls", "agent RSS MB", "CPU ms/task")
    for name, f in (("capacity (LLM)", doc["capacity"]), ("queued (LLM)", doc["queued"]),
                    ("offline ceiling", doc["offline_ceiling"])):
        if f is None:
            continue
        table.add_row(f"{name}, {f['tasks']} tasks", f"{f['tasks_per_s']:.0f}", f"{f['p50_ms']:.0f}",
                      f"{f['p99_ms']:.0f}", str(f.get("server_peak_concurrent_calls", "-")),
                      f"{f['agent_rss_peak_mb']:.0f}", f"{f['pipeline_cpu_ms_per_task']:.1f}")
    raw = doc["raw_kafka"]
    table.add_row("raw confluent-kafka", f"{raw['throughput_per_s']:.0f}", f"{raw['p50_ms']:.1f}",
                  f"{raw['p99_ms']:.1f}", "", "", "")
    console.print(table)
    console.print(f"{doc['mode']}, LLM {doc['llm']['call_s']:g}s per call: ideal {doc['ideal_tasks_per_s']} tasks/s; "
                  f"capacity/ideal {doc['ratio']['capacity_over_ideal']}, capacity/offline ceiling "
                  f"{doc['ratio']['capacity_over_offline_ceiling']}; load average {doc['load_avg_1m']:.2f}")


@bench.command("orchestrator")
@click.option("--tasks", default=1000, show_default=True, help="Tasks in the DAG (rounded to width x depth).")
@click.option("--width", default=25, show_default=True, help="Tasks per layer; each depends on two of the layer before.")
@json_option
def orchestrator_cmd(tasks: int, width: int, as_json: bool) -> None:
    """A layered DAG through orchestrator, results committer and agents (offline): scheduling overhead."""
    from aios.bench.orchestrator import bench_orchestrator

    if width < 2 or tasks < 2 * width:
        raise click.BadParameter("--width must be ≥ 2 and --tasks at least two layers (2 x width)")
    depth = tasks // width
    settings = settings_or_exit()
    try:
        with progress("tasks", total=width * depth, enabled=not as_json) as bar:
            doc = bench_orchestrator(settings, width=width, depth=depth, tick=bar.advance)
    except AiosError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        emit_json(doc)
        return
    o, v, r = doc["overhead_ms"], doc["visible_overhead_ms"], doc["raw_kafka_hop_ms"]
    table = Table("figure", "p50 ms", "p99 ms", "max ms")
    table.add_row(f"scheduling overhead, produced ({o['count']} dependent tasks)", f"{o['p50']:.1f}",
                  f"{o['p99']:.1f}", f"{o['max']:.1f}")
    table.add_row("scheduling overhead, visible (committed, as an agent sees it)", f"{v['p50']:.1f}",
                  f"{v['p99']:.1f}", f"{v['max']:.1f}")
    table.add_row("raw confluent-kafka hop (same run)", f"{r['p50']:.1f}", f"{r['p99']:.1f}", "")
    console.print(table)
    console.print(f"{doc['dag']['tasks']} tasks ({width} x {depth}) in {doc['elapsed_s']} s: "
                  f"{doc['tasks_per_s']} tasks/s; target overhead p50 ≤ {doc['target']['overhead_p50_ms']} ms")


@bench.command("dag")
@click.option("--tasks", default=100_000, show_default=True, help="Tasks in the chain and in each fan.")
@click.option("--repeat", default=3, show_default=True, help="Runs per figure; the best is shown.")
@json_option
def dag_cmd(tasks: int, repeat: int, as_json: bool) -> None:
    """Cycle check, plan validation, critical path and status on a long chain and wide fans (no Kafka)."""
    from aios.bench.dag import bench_dag

    if tasks < 2 or repeat < 1:
        raise click.BadParameter("--tasks must be ≥ 2 and --repeat ≥ 1")
    doc = bench_dag(tasks, repeat)
    if as_json:
        emit_json(doc)
        return
    table = Table("shape", "one pass ms (baseline)", "cycle check ms", "validate ms", "critical path ms",
                  "status ms")
    for name, f in doc["shapes"].items():
        table.add_row(name, *(f"{f[k]:.1f}" for k in ("one_pass_ms", "cycle_check_ms", "validate_ms",
                                                      "critical_path_ms", "status_ms")))
    console.print(table)
    console.print(f"{tasks} tasks per shape, best of {repeat}")


@bench.command("sink")
@click.option("--rows", default=100_000, show_default=True, help="Events through the sink path and the raw insert.")
@click.option("--stats-rows", default=1_000_000, show_default=True, help="Synthetic rows per table for `aios stats`.")
@click.option("--batch", default=None, type=int, help="Sink batch size [default: AIOS_SINK_BATCH_SIZE].")
@json_option
def sink_cmd(rows: int, stats_rows: int, batch: int | None, as_json: bool) -> None:
    """History sink rows/s into chdb vs a raw bulk insert, and `aios stats` latency over many rows.

    Runs on a fresh chdb directory of its own, so it needs a process of its own (the CLI is one).
    """
    from aios.bench.sink import bench_sink

    if rows < 1 or stats_rows < 1 or (batch is not None and batch < 1):
        raise click.BadParameter("--rows, --stats-rows and --batch must be ≥ 1")
    settings = settings_or_exit()
    try:
        with progress("rows", total=rows, enabled=not as_json) as bar:
            doc = bench_sink(rows=rows, stats_rows=stats_rows, batch=batch or settings.processing.sink_batch_size,
                             tick=bar.advance)
    except AiosError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        emit_json(doc)
        return
    table = Table("run", "rows", "seconds", "CPU seconds", "rows/s")
    for name in ("sink", "raw_insert"):
        f = doc[name]
        table.add_row(name, str(doc["rows"]), f"{f['seconds']:.2f}", f"{f['cpu_seconds']:.2f}", str(f["rows_per_s"]))
    console.print(table)
    q = doc["stats"]["query_ms"]
    console.print(f"sink/raw: {doc['ratio_sink_over_raw']:.3f}; stored as Native blocks: "
                  f"{doc['sink']['native']} of {doc['rows']}; `aios stats` over {doc['stats']['rows_per_table']} rows "
                  f"per table: median {q['all projects']['median']} ms (one project "
                  f"{q['one project']['median']} ms)")


@bench.command("router")
@click.option("--decisions", default=20_000, show_default=True,
              help="Routing decisions timed per strategy, and limiter admissions.")
@click.option("--calls", default=300, show_default=True, help="Calls per path against the local server.")
@click.option("--concurrency", default=100, show_default=True, help="Calls in flight at once in the concurrent run.")
@click.option("--base-url", default=None, help="An OpenAI-compatible server [default: the wire-format fake].")
@json_option
def router_cmd(decisions: int, calls: int, concurrency: int, base_url: str | None, as_json: bool) -> None:
    """Routing decision and limiter overhead (µs), and calls/s one at a time and many at once:
    raw SDK vs provider vs router vs router with limits."""
    from aios.bench.router import bench_router

    if decisions < 100 or calls < 10 or concurrency < 1:
        raise click.BadParameter("--decisions must be ≥ 100, --calls ≥ 10 and --concurrency ≥ 1")
    try:
        with progress("samples", total=6 * decisions + 8 * calls, enabled=not as_json) as bar:
            doc = bench_router(decisions=decisions, calls=calls, concurrency=concurrency, base_url=base_url,
                               tick=bar.advance)
    except AiosError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        emit_json(doc)
        return
    d = doc["decision"]
    table = Table("decision", "p50 µs", "p99 µs", "mean µs")
    for name, f in [*d["strategies"].items(), ("baseline: first in list", d["baseline_first_in_list"])]:
        table.add_row(name, f"{f['p50_us']:.1f}", f"{f['p99_us']:.1f}", f"{f['mean_us']:.1f}")
    lim = doc["limiter"]
    for name, label in (("limited", "limiter: admit + release, every limit"),
                        ("baseline_no_limits", "limiter: admit + release, no limits")):
        f = lim[name]
        table.add_row(label, f"{f['p50_us']:.1f}", f"{f['p99_us']:.1f}", f"{f['mean_us']:.1f}")
    console.print(f"{d['deployments']} deployments, {d['prompt_chars']}-character prompt, "
                  f"{d['decisions']} decisions per strategy")
    console.print(table)
    c = doc["calls"]
    calls_table = Table("path", "calls/s (1 at a time)", "p50 µs", "p99 µs",
                        f"calls/s ({c['concurrency']} at once)", "p50 µs", "p99 µs")
    for name in ("raw_sdk", "provider", "router", "router_limited"):
        one, many = c["sequential"][name], c["concurrent"][name]
        calls_table.add_row(name, f"{one['calls_per_s']:.0f}", f"{one['p50_us']:.0f}", f"{one['p99_us']:.0f}",
                            f"{many['calls_per_s']:.0f}", f"{many['p50_us']:.0f}", f"{many['p99_us']:.0f}")
    console.print(calls_table)


@bench.command("memory")
@click.option("--turns", default=50, show_default=True, help="Turns in the window whose fetch is timed.")
@click.option("--fetches", default=5000, show_default=True, help="Timed context fetches.")
@click.option("--events", default=20_000, show_default=True, help="MemoryEvents through the memory processor.")
@click.option("--windows", default=200, show_default=True, help="Windows (scope ids) the events are spread over.")
@click.option("--sentences", default=2000, show_default=True, help="Sentences embedded with the local model.")
@click.option("--vectors", default="10k,100k", show_default=True,
              help="Collection sizes for recall in Qdrant local mode, comma-separated.")
@click.option("--queries", default=200, show_default=True, help="Timed searches per collection size.")
@click.option("--disk-max", default=10_000, show_default=True,
              help="Larger collections are built in memory (same local-mode search code, no per-point commit).")
@click.option("--max-build-s", default=900.0, show_default=True,
              help="Stop filling a collection after this many seconds and measure the size reached.")
@click.option("--query-budget-s", default=120.0, show_default=True,
              help="Stop searching a collection after this many seconds (at least 10 searches).")
@json_option
def memory_cmd(turns: int, fetches: int, events: int, windows: int, sentences: int, vectors: str, queries: int,
               disk_max: int, max_build_s: float, query_budget_s: float, as_json: bool) -> None:
    """Context fetch p50/p99, memory processor events/s vs raw redis-py, embedding and recall speed."""
    from contextlib import contextmanager
    from typing import Any

    from aios.bench.memory import bench_memory, iter_sizes

    try:
        sizes = list(iter_sizes(vectors))
    except ValueError as exc:
        raise click.BadParameter(f"--vectors {vectors!r}: give sizes like 10000,100000 or 10k,100k") from exc
    if min(turns, fetches, events, windows, sentences, queries, *sizes, 1) < 1:
        raise click.BadParameter("every count must be ≥ 1")
    settings = settings_or_exit()

    @contextmanager
    def phase(description: str, total: int) -> Any:
        with progress(description, total=total, enabled=not as_json) as bar:
            yield bar.advance

    try:
        doc = bench_memory(settings, turns=turns, fetches=fetches, events=events, windows=windows,
                           sentences=sentences, sizes=sizes, queries=queries, disk_max=disk_max,
                           max_build_s=max_build_s, query_budget_s=query_budget_s, phase=phase)
    except AiosError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        emit_json(doc)
        return
    f, p = doc["fetch"], doc["processor"]
    table = Table("figure", "value", "baseline (same run)", "target")
    table.add_row(f"context fetch, {f['turns']}-turn window p50 / p99 ms",
                  f"{f['context_read']['p50_ms']:.2f} / {f['context_read']['p99_ms']:.2f}",
                  f"bare LRANGE {f['raw_lrange']['p50_ms']:.2f} / {f['raw_lrange']['p99_ms']:.2f}", "p99 ≤ 3")
    table.add_row("memory processor events/s (no embedding)", str(p["processor"]["events_per_s"]),
                  f"raw redis-py pipeline {p['raw_redis_pipeline']['events_per_s']}", "≥ 5000")
    table.add_row("  of which the Redis step alone", str(p["context_apply_many"]["events_per_s"]), "", "")
    table.add_row("embedding sentences/s (ONNX MiniLM)", str(doc["embedding"]["sentences_per_s"]), "", "")
    for r in doc["recall"]:
        size = (f"{r['vectors']:,} ({r['storage']}, {r['upserts_per_s']} upserts/s)"
                + ("" if r["complete"] else f" of {r['requested']:,}: build stopped"))
        table.add_row(f"recall top-5 at {size} vectors p50 / p99 ms",
                      f"{r['top5']['p50_ms']:.1f} / {r['top5']['p99_ms']:.1f}",
                      f"project filter {r['top5_project_filter']['p50_ms']:.1f} / "
                      f"{r['top5_project_filter']['p99_ms']:.1f}", "p50 ≤ 25 at 10k")
    console.print(table)
    console.print(f"{doc['cpus']} CPUs, load average {doc['load_avg_1m']} before, {doc['load_avg_1m_after']} after")


@bench.command("api")
@click.option("--requests", default=5000, show_default=True, help="POST /v1/tasks per run (paced and burst).")
@click.option("--rate", default=1000.0, show_default=True, help="Offered load (requests/s) for the latency run.")
@click.option("--connections", default=32, show_default=True, help="Keep-alive connections of the load generator.")
@click.option("--clients", default=100, show_default=True, help="WebSocket clients in the fan-out run.")
@click.option("--events", default=1000, show_default=True, help="Events each WebSocket client should receive.")
@click.option("--event-rate", default=200.0, show_default=True, help="Events/s produced in the fan-out run.")
@click.option("--port", default=18765, show_default=True, help="Port of the `aios api` process under test.")
@json_option
def api_cmd(requests: int, rate: float, connections: int, clients: int, events: int, event_rate: float, port: int,
            as_json: bool) -> None:
    """POST /v1/tasks req/s and p99 at a fixed rate vs a raw producer, and WebSocket fan-out."""
    from aios.bench.api import bench_api  # the CLI is the edge that composes api/ with streams/

    if min(requests, connections, clients, events) < 1 or rate <= 0 or event_rate <= 0:
        raise click.BadParameter("counts must be ≥ 1 and rates > 0")
    settings = settings_or_exit()
    try:
        with progress("requests", total=min(500, requests) + 2 * requests, enabled=not as_json) as bar:
            doc = bench_api(settings, requests=requests, rate=rate, connections=connections, clients=clients,
                            events=events, event_rate=event_rate, port=port, tick=bar.advance)
    except AiosError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        emit_json(doc)
        return
    table = Table("run", "requests", "per s", "p50 ms", "p99 ms", "max ms")
    for name, runs in (("API POST /v1/tasks", doc["api"]), ("raw producer", doc["raw_producer"])):
        for mode in ("burst", "paced"):
            f = runs[mode]
            label = f"{name} ({'burst' if mode == 'burst' else f'at {rate:g}/s'})"
            table.add_row(label, str(f["requests"]), f"{f['per_s']:.0f}", f"{f['p50_ms']:.1f}", f"{f['p99_ms']:.1f}",
                          f"{f['max_ms']:.1f}")
    console.print(table)
    w = doc["websocket"]
    console.print(f"API/raw burst throughput: {doc['ratio_api_over_raw_burst']:.3f}; WebSocket fan-out: "
                  f"{w['clients']} clients x {w['events']} events at {w['offered_rate_per_s']:g}/s -> "
                  f"{w['deliveries_per_s']:.0f} deliveries/s, p50 {w['p50_ms']} ms, p99 {w['p99_ms']} ms, "
                  f"{w['complete_clients']} complete, closed {w['closed']}")
