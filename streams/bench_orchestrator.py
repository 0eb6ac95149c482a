"""``aios bench orchestrator``: a layered DAG (width x depth) through the orchestrator.

Scheduling overhead per task is the time from the last of its dependencies' attempts reaching
``aios.attempts`` to its own assignment reaching its role topic, both read from the records'
broker-side produce timestamps, so the bench's own clock and consumers add nothing. The baseline
in the same run is one raw confluent-kafka produce-to-consume hop on the same broker.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE
from confluent_kafka.admin import NewTopic

from streams.bench import PipelineProcess, _latency_figures, _wait_for_leaders, raw_kafka
from streams.client import TaskClient, wait_project
from streams.errors import OrchestrationError
from streams.kafka import TopicReader
from streams.orchestration.plan import Plan, PlannedTask, validate_plan
from streams.settings import Settings
from streams.topics import admin_client, create_topics

PROCESSES = [["worker", "orchestrator"], ["worker", "results"], ["worker", "agents"]]
PROJECT = "bench-dag"


def layered_plan(width: int, depth: int, role: str) -> Plan:
    """Layer d's task i waits for tasks i and i+1 (mod width) of layer d-1: two edges per task."""
    tasks = []
    for d in range(depth):
        for i in range(width):
            deps = () if d == 0 else tuple(dict.fromkeys((f"L{d - 1}-{i}", f"L{d - 1}-{(i + 1) % width}")))
            tasks.append(PlannedTask(id=f"L{d}-{i}", role=role, description=f"layer {d} task {i}", depends_on=deps))
    return Plan(project=PROJECT, tasks=tuple(tasks))


def _stamped(settings: Settings, topic: str, project: str) -> dict[str, int]:
    """task id -> broker timestamp (ms) of the first record of ``project`` on ``topic``."""
    reader = TopicReader(settings, topic, from_beginning=True)
    stamps: dict[str, int] = {}
    try:
        for msg, decoded in reader.events(timeout_s=3):
            if isinstance(decoded, Exception) or decoded.value["project_id"] != project:
                continue
            kind, ts = msg.timestamp()
            if kind != TIMESTAMP_NOT_AVAILABLE:
                stamps.setdefault(decoded.value["task_id"], ts)
    finally:
        reader.close()
    return stamps


def overheads(plan: Plan, attempts: dict[str, int], assigned: dict[str, int]) -> list[float]:
    """Per task with dependencies: its assignment time minus its last dependency's attempt time."""
    out = []
    for t in plan.tasks:
        if t.depends_on and t.id in assigned and all(d in attempts for d in t.depends_on):
            out.append(float(assigned[t.id] - max(attempts[d] for d in t.depends_on)))
    return out


def bench_orchestrator(base: Settings, *, width: int, depth: int, tick: Callable[[int], None]) -> dict[str, Any]:
    prefix = f"benchorch{int(time.time())}"
    settings = base.model_copy(update={"topic_prefix": prefix})
    create_topics(settings)
    raw_topic = f"{prefix}.raw-baseline"
    admin = admin_client(settings)  # keep a reference: futures fail if the client is collected
    admin.create_topics([NewTopic(raw_topic, num_partitions=settings.topic_partitions,
                                  replication_factor=settings.topic_replication)])[raw_topic].result(30)
    _wait_for_leaders(admin, raw_topic, settings.topic_partitions)
    raw = raw_kafka(settings, raw_topic, 1000, 300, 100.0, lambda n: None)
    role = settings.roles[0]
    plan = layered_plan(width, depth, role)
    validate_plan(plan, settings.roles)
    with tempfile.TemporaryDirectory(prefix="aios-bench-") as tmp:
        procs = [PipelineProcess(settings, cmd, Path(tmp) / str(i)) for i, cmd in enumerate(PROCESSES)]
        try:
            for proc in procs:
                proc.wait_ready()
            client = TaskClient(settings)
            started = time.perf_counter()
            try:
                client.submit_plan(plan, submitted_by="bench")
            finally:
                client.close()
            final = _wait_with_progress(settings, tick)
            elapsed = time.perf_counter() - started
        finally:
            for proc in procs:
                proc.stop()
    if final["state"] != "succeeded":
        raise OrchestrationError(f"the bench DAG ended {final['state']}: {final['counts']}")
    attempts = _stamped(settings, f"{prefix}.attempts", PROJECT)
    assigned = _stamped(settings, f"{prefix}.agent.{role}", PROJECT)
    gaps = overheads(plan, attempts, assigned)
    p50, p99, worst = _latency_figures(gaps)
    return {
        "kafka": settings.kafka_bootstrap, "prefix": prefix, "cpus": os.cpu_count(), "provider": "offline:echo",
        "processes": [" ".join(["aios", *cmd]) for cmd in PROCESSES],
        "dag": {"tasks": len(plan.tasks), "width": width, "depth": depth, "edges_per_task": 2},
        "tasks_per_s": round(len(plan.tasks) / elapsed, 1), "elapsed_s": round(elapsed, 2),
        "overhead_ms": {"count": len(gaps), "p50": p50, "p99": p99, "max": worst},
        "raw_kafka_hop_ms": {"p50": raw.p50_ms, "p99": raw.p99_ms},
        "target": {"overhead_p50_ms": 10},
    }


def _wait_with_progress(settings: Settings, tick: Callable[[int], None]) -> dict[str, Any]:
    done = 0

    def on_status(status: dict[str, Any]) -> None:
        nonlocal done
        finished = sum(status["counts"].get(s, 0) for s in ("succeeded", "failed", "skipped", "cancelled"))
        tick(finished - done)
        done = finished

    return wait_project(settings, PROJECT, 600, on_status=on_status)
