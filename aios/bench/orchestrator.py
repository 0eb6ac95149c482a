"""``aios bench orchestrator``: a layered DAG (width x depth) through the orchestrator.

Scheduling overhead per task is measured from the last of its dependencies' attempts reaching
``aios.attempts`` to its own assignment, two ways:
- *produced*: the assignment's arrival at the broker. The bench's topics stamp records with the
  broker's append time (``LogAppendTime``), so the agent's producer delay before the attempt
  reached Kafka is not counted, and no consumer of the bench's adds anything;
- *visible*: when a read_committed consumer in the bench received it. The orchestrator writes in
  transactions, so an assignment can be run only once its transaction commits; this includes
  the commit and one consumer fetch, as an agent sees it.
The baseline in the same run is one raw confluent-kafka produce-to-consume hop on the same broker.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, TIMESTAMP_NOT_AVAILABLE, TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from aios.bench.toolkit import PipelineProcess, create_raw_topic, latency_figures, raw_kafka, scratch_topics
from aios.streams.errors import OrchestrationError
from aios.streams.kafka import TopicReader, make_codec, make_consumer
from aios.streams.orchestration.plan import Plan, PlannedTask, validate_plan
from aios.streams.readmodels.task_client import TaskClient, wait_project
from aios.streams.settings import Settings
from aios.streams.topics import admin_client

PROCESSES = [["worker", "orchestrator"], ["worker", "results"], ["worker", "agents"]]
PROJECT = "bench-dag"
WARMUP = "bench-warmup"  # a small DAG run first: connections, partitions in transactions, JIT


def layered_plan(width: int, depth: int, role: str, project: str = PROJECT) -> Plan:
    """Layer d's task i waits for tasks i and i+1 (mod width) of layer d-1: two edges per task."""
    tasks = []
    for d in range(depth):
        for i in range(width):
            deps = () if d == 0 else tuple(dict.fromkeys((f"L{d - 1}-{i}", f"L{d - 1}-{(i + 1) % width}")))
            tasks.append(PlannedTask(id=f"L{d}-{i}", role=role, description=f"layer {d} task {i}", depends_on=deps))
    return Plan(project=project, tasks=tuple(tasks))


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


def stamp_by_broker(settings: Settings, topics: list[str]) -> None:
    """Record timestamps become the broker's append time on these (bench-only) topics."""
    admin = admin_client(settings)
    op = ConfigEntry("message.timestamp.type", "LogAppendTime", incremental_operation=AlterConfigOpType.SET)
    futures = admin.incremental_alter_configs([ConfigResource(ResourceType.TOPIC, t, incremental_configs=[op])
                                               for t in topics])
    for future in futures.values():
        future.result(30)


class Watcher(threading.Thread):
    """Records when each task's first assignment becomes visible to a read_committed consumer."""

    def __init__(self, settings: Settings, topic: str) -> None:
        super().__init__(daemon=True)
        self.seen: dict[str, int] = {}
        self.stop = threading.Event()
        self.codec = make_codec(settings)
        self.consumer = make_consumer(settings, group=f"bench-watch-{time.time_ns()}", **{"fetch.wait.max.ms": 1})
        # Assigned, not subscribed: no group join to wait for before the first assignment arrives.
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(settings.kafka.topic_partitions)])

    def caught_up(self, tasks: set[str], timeout_s: float) -> None:
        """Wait until every task's assignment was seen (a CI run once ended before the watcher's
        first fetch); a late sighting counts late, so a slow watcher shows in the figures."""
        deadline = time.monotonic() + timeout_s
        while not tasks <= self.seen.keys() and time.monotonic() < deadline:
            time.sleep(0.05)

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                msg = self.consumer.poll(0.05)
                if msg is None or msg.error() is not None:
                    continue
                at = time.time_ns() // 1_000_000
                value = self.codec.decode(msg.value()).value
                if value["project_id"] == PROJECT:
                    self.seen.setdefault(value["task_id"], at)
        finally:
            self.consumer.close()


def bench_orchestrator(base: Settings, *, width: int, depth: int, tick: Callable[[int], None]) -> dict[str, Any]:
    with scratch_topics(base, "benchorch") as settings:
        return _bench_orchestrator(settings, width=width, depth=depth, tick=tick)


def _bench_orchestrator(settings: Settings, *, width: int, depth: int, tick: Callable[[int], None]) -> dict[str, Any]:
    prefix = settings.kafka.topic_prefix
    role = settings.processing.roles[0]
    stamp_by_broker(settings, [f"{prefix}.attempts", f"{prefix}.agent.{role}"])
    raw_topic = f"{prefix}.raw-baseline"
    create_raw_topic(settings, raw_topic)
    raw = raw_kafka(settings, raw_topic, 1000, 300, 100.0, lambda n: None)
    plan = layered_plan(width, depth, role)
    validate_plan(plan, settings.processing.roles)
    with tempfile.TemporaryDirectory(prefix="aios-bench-") as tmp:
        procs = [PipelineProcess(settings, cmd, Path(tmp) / str(i)) for i, cmd in enumerate(PROCESSES)]
        try:
            for proc in procs:
                proc.wait_ready()
            watcher = Watcher(settings, f"{prefix}.agent.{role}")
            watcher.start()
            client = TaskClient(settings)
            try:
                # The first layer of a cold run waits on first fetches and first transactions
                # (up to ~300 ms): a warm-up project keeps that out of the measured figures.
                client.submit_plan(layered_plan(width, 3, role, WARMUP), submitted_by="bench")
                warm = wait_project(settings, WARMUP, 120)
                if warm["state"] != "succeeded":
                    raise OrchestrationError(f"the warm-up DAG ended {warm['state']}: {warm['counts']}")
                started = time.perf_counter()
                client.submit_plan(plan, submitted_by="bench")
            finally:
                client.close()
            final = _wait_with_progress(settings, tick)
            elapsed = time.perf_counter() - started
            watcher.caught_up({t.id for t in plan.tasks}, 15.0)
            watcher.stop.set()
            watcher.join(10)
        finally:
            for proc in procs:
                proc.stop()
    if final["state"] != "succeeded":
        raise OrchestrationError(f"the bench DAG ended {final['state']}: {final['counts']}")
    attempts = _stamped(settings, f"{prefix}.attempts", PROJECT)
    assigned = _stamped(settings, f"{prefix}.agent.{role}", PROJECT)
    gaps = overheads(plan, attempts, assigned)
    p50, p99, worst = latency_figures(gaps)
    seen = overheads(plan, attempts, watcher.seen)
    if not seen:
        raise OrchestrationError("the read_committed watcher saw none of the bench's assignments on "
                                 f"{prefix}.agent.{role} within 15 s of the DAG's end")
    v50, v99, vmax = latency_figures(seen)
    return {
        "kafka": settings.kafka.bootstrap, "prefix": prefix, "cpus": os.cpu_count(), "provider": "offline:echo",
        "processes": [" ".join(["aios", *cmd]) for cmd in PROCESSES],
        "dag": {"tasks": len(plan.tasks), "width": width, "depth": depth, "edges_per_task": 2},
        "warmup": {"project": WARMUP, "tasks": width * 3, "measured": False},
        "tasks_per_s": round(len(plan.tasks) / elapsed, 1), "elapsed_s": round(elapsed, 2),
        "overhead_ms": {"count": len(gaps), "p50": p50, "p99": p99, "max": worst},
        "visible_overhead_ms": {"count": len(seen), "p50": v50, "p99": v99, "max": vmax},
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
