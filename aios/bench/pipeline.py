"""``aios bench pipeline``: tasks through orchestrator and agent, beside raw confluent-kafka.

Both runs use the same broker in the same process run, so the ratio says what the pipeline
costs over Kafka itself. The pipeline runs as a separate ``aios up`` process, as a user runs it.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aios.bench.toolkit import (
    Figures,
    PipelineProcess,
    create_raw_topic,
    latency_figures,
    raw_kafka,
    scratch_topics,
    send_paced,
)
from aios.streams.errors import OrchestrationError
from aios.streams.readmodels.task_client import TaskClient, build_task
from aios.streams.settings import Settings

# --- raw confluent-kafka baseline -------------------------------------------------------------


# --- the AIOS pipeline ------------------------------------------------------------------------

def pipeline(settings: Settings, burst: int, paced: int, rate: float, tick: Callable[[int], None]) -> Figures:
    client = TaskClient(settings)
    client.watch_results()

    def run(count: int, pace: float | None) -> tuple[float, list[float]]:
        tasks = [build_task(f"bench task {i}", role=settings.processing.roles[0], project="bench", submitted_by="bench")
                 for i in range(count)]
        sent: dict[str, float] = {}
        latencies: list[float] = []

        def send(i: int) -> None:
            sent[tasks[i]["task_id"]] = time.perf_counter()
            client.submit(tasks[i], flush=False)

        def produce_all() -> None:
            def send_now(i: int) -> None:
                send(i)
                client.producer.flush(0)

            if pace:
                send_paced(count, pace, send_now)
            else:
                for i in range(count):
                    send(i)
            client.producer.flush()

        def on_result(d: Any) -> None:
            latencies.append((time.perf_counter() - sent[d.result["task_id"]]) * 1000)
            tick(1)

        t0 = time.perf_counter()
        thread = threading.Thread(target=produce_all)
        thread.start()
        client.wait([t["task_id"] for t in tasks], timeout_s=120, on_result=on_result)
        elapsed = time.perf_counter() - t0
        thread.join()
        return elapsed, latencies

    # Warm-up at the offered rate, discarded: connections, metadata, group joins, first fetches.
    run(min(200, paced), rate)
    # Latency before the burst: after a burst, memory and history drain their backlog a while.
    _, latencies = run(paced, rate)
    burst_elapsed, _ = run(burst, None)
    client.close()
    p50, p99, worst = latency_figures(latencies)
    return Figures(burst, burst / burst_elapsed, len(latencies), rate, p50, p99, worst)


# embedded: `aios up`, as users run it (it supervises one process per processor group, plus the API,
# the JSON bridges and chdb's owner); distributed: one `aios worker` each for the five processors.
MODES = {
    "embedded": [["up", "--no-stack"]],
    "distributed": [["worker", name] for name in ("orchestrator", "results", "agents", "memory", "history")],
}


def bench_pipeline(base: Settings, *, tasks: int, paced: int, rate: float, mode: str,
                   tick: Callable[[int], None]) -> dict[str, Any]:
    with scratch_topics(base, "bench") as settings:
        return _bench_pipeline(settings, tasks=tasks, paced=paced, rate=rate, mode=mode, tick=tick)


def _bench_pipeline(settings: Settings, *, tasks: int, paced: int, rate: float, mode: str,
                    tick: Callable[[int], None]) -> dict[str, Any]:
    prefix = settings.kafka.topic_prefix
    raw_topic = f"{prefix}.raw-baseline"
    create_raw_topic(settings, raw_topic)
    raw = raw_kafka(settings, raw_topic, tasks, paced, rate, tick)
    if mode not in MODES:
        raise OrchestrationError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    with tempfile.TemporaryDirectory(prefix="aios-bench-") as tmp:
        procs = [PipelineProcess(settings, cmd, Path(tmp) / str(i)) for i, cmd in enumerate(MODES[mode])]
        try:
            for proc in procs:
                proc.wait_ready()
            piped = pipeline(settings, tasks, paced, rate, tick)
        finally:
            for proc in procs:
                proc.stop()
    return {
        "kafka": settings.kafka.bootstrap,
        "prefix": prefix,
        "mode": mode,
        "processes": [" ".join(["aios", *cmd]) for cmd in MODES[mode]],
        "provider": "offline:echo",
        "cpus": os.cpu_count(),
        "pipeline": piped.__dict__,
        "raw_kafka": raw.__dict__,
        "ratio": {
            "throughput_pipeline_over_raw": round(piped.throughput_per_s / raw.throughput_per_s, 4),
            "p50_pipeline_over_raw": round(piped.p50_ms / raw.p50_ms, 2) if raw.p50_ms else None,
        },
        "targets": {"throughput_per_s": 500, "p50_ms": 25, "p99_ms": 150, "at_rate_per_s": 100},
    }
