"""``aios bench …``: benchmarks print their figures and their baseline from the same run."""

from __future__ import annotations

import click
from rich.table import Table

from schemas.errors import AiosError
from streams.cli.common import settings_or_exit
from streams.cli.output import console, emit_json, json_option, progress


@click.group()
def bench() -> None:
    """Benchmarks (figures go in docs/benchmarks.md)."""


@bench.command("pipeline")
@click.option("--tasks", default=2000, show_default=True, help="Tasks in the throughput burst.")
@click.option("--paced", default=1000, show_default=True, help="Tasks sent at --rate for the latency run.")
@click.option("--rate", default=100.0, show_default=True, help="Offered load (tasks/s) for the latency run.")
@click.option("--mode", type=click.Choice(["embedded", "distributed"]), default="embedded", show_default=True,
              help="embedded: `aios up` in one process; distributed: one `aios worker` process per processor.")
@json_option
def pipeline_cmd(tasks: int, paced: int, rate: float, mode: str, as_json: bool) -> None:
    """Tasks through orchestrator and agent (offline provider) vs raw confluent-kafka."""
    from streams.bench import bench_pipeline

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
