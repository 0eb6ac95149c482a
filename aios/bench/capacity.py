"""``aios bench capacity``: JSON tasks through the real pipeline against a latency-simulating LLM.

JSON tasks go in on ``<prefix>.tasks-json`` and JSON results come out on ``<prefix>.results-json``,
through ``aios up`` (embedded) or one ``aios worker`` per processor with two agent workers
(distributed), against ``aios dev llm`` in a process of its own (time to first token, streaming
time and answer length as given). In the same run: the raw confluent-kafka baseline, and the same
tasks with the offline provider, which is the CPU ceiling of the pipeline on this machine. It
reports tasks/s, the ideal tasks/s for the latency, the peak of concurrent calls the server saw,
p50/p99 submit→result, the agent worker's RSS (and with ``--queued`` tasks waiting at once) and the
pipeline's CPU ms per task.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from aios.bench.toolkit import (
    PipelineProcess,
    assign_at_end,
    create_raw_topic,
    percentile,
    raw_kafka,
    scratch_topics,
)
from aios.streams.errors import OrchestrationError
from aios.streams.kafka import make_consumer, producer_config
from aios.streams.settings import Settings

TASKS_PER_PROJECT = 50  # below AIOS_PROJECT_CONCURRENCY (64): the bench measures agents, not that cap
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """A process's resident memory (``VmRSS``) or its peak (``VmHWM``), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def process_tree(pid: int) -> list[int]:
    """``pid`` and every live process below it: `aios up` runs each processor group as a child."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        children.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += children.get(current, [])
    return tree


def is_agent_worker(pid: int) -> bool:
    """Whether the process runs agents (`aios worker agents`, on its own or as `aios up`'s child)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"worker" in argv and b"agents" in argv


class RssSampler:
    """The highest RSS of some processes, sampled every 0.2 s while it runs."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for pid in self.pids:
                try:
                    self.peak_mb = max(self.peak_mb, rss_mb(pid))
                except OSError:
                    continue


def modes(agent_workers: int) -> dict[str, list[list[str]]]:
    """The processes of each mode; distributed runs ``agent_workers`` agent workers."""
    return {
        "embedded": [["up", "--no-stack"]],
        "distributed": [["worker", name] for name in ("orchestrator", "results", "memory", "history",
                                                       "json-ingress", "json-egress")]
        + [["worker", "agents"] for _ in range(agent_workers)],
    }


def submit_json(settings: Settings, count: int, tag: str, tick: Callable[[int], None],
                timeout_s: float) -> dict[str, Any]:
    """``count`` JSON tasks at once; wait for their JSON results. Latencies are submit→result."""
    topic_in = f"{settings.kafka.topic_prefix}.tasks-json"
    topic_out = f"{settings.kafka.topic_prefix}.results-json"
    consumer = make_consumer(settings, group=f"bench-cap-{time.time_ns()}", **{"fetch.wait.max.ms": 10})
    assign_at_end(consumer, topic_out)
    producer = Producer(producer_config(settings))
    projects = max(1, math.ceil(count / TASKS_PER_PROJECT))
    sent: dict[str, float] = {}
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    t0 = time.perf_counter()
    for i in range(count):
        task_id = f"{tag}-{i}"
        doc = {"task_id": task_id, "project": f"{tag}-p{i % projects}", "role": settings.processing.roles[0],
               "description": f"capacity task {i}: summarise the design notes of item {i}",
               "submitted_by": "bench"}
        sent[task_id] = time.perf_counter()
        producer.produce(topic_in, json.dumps(doc).encode(), key=task_id.encode())
        producer.poll(0)
    producer.flush(30)
    last = t0
    deadline = time.monotonic() + timeout_s
    try:
        while len(latencies) < count and time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.2):
                if msg.error() is not None:
                    continue
                result = json.loads(msg.value() or b"{}")
                started = sent.pop(str(result.get("task_id")), None)
                if started is None:
                    continue
                last = time.perf_counter()
                latencies.append((last - started) * 1000)
                statuses[str(result.get("status"))] = statuses.get(str(result.get("status")), 0) + 1
                tick(1)
    finally:
        consumer.close()
    if len(latencies) < count:
        raise OrchestrationError(f"capacity bench: {len(latencies)} of {count} results within {timeout_s:.0f}s; "
                                 f"statuses so far {statuses}")
    elapsed = last - t0
    return {"tasks": count, "elapsed_s": round(elapsed, 3), "tasks_per_s": round(count / elapsed, 1),
            "p50_ms": round(percentile(latencies, 50), 1), "p99_ms": round(percentile(latencies, 99), 1),
            "statuses": statuses}


def _server_stats(stats_url: str, reset: bool = False) -> dict[str, Any]:
    url = stats_url + ("/reset" if reset else "")
    request = urllib.request.Request(url, method="POST" if reset else "GET")  # noqa: S310 - our loopback server
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        doc: dict[str, Any] = json.loads(response.read())
    return doc


def _pipeline_run(settings: Settings, mode: str, agent_workers: int, env: dict[str, str], data_dir: Path,
                  counts: list[tuple[str, int]], tick: Callable[[int], None],
                  stats_url: str | None) -> dict[str, Any]:
    """Start the pipeline, run each (tag, count) burst in turn, and measure it; then stop it."""
    commands = modes(agent_workers)[mode]
    procs = [PipelineProcess(settings, cmd, data_dir / f"{mode}-{i}", env) for i, cmd in enumerate(commands)]
    runs: dict[str, Any] = {}
    try:
        for proc in procs:
            proc.wait_ready(120)
        # Every process of the pipeline: `aios up`'s children are where its processors run.
        pids = [pid for p in procs for pid in process_tree(p.proc.pid)]
        agents = [pid for pid in pids if is_agent_worker(pid)]
        for tag, count in counts:
            if stats_url is not None:
                _server_stats(stats_url, reset=True)
            cpu_before = {pid: cpu_seconds(pid) for pid in pids}
            with RssSampler(agents) as rss:
                figures = submit_json(settings, count, f"{tag}{time.time_ns()}", tick, timeout_s=max(180.0, count / 5))
            cpu = {pid: cpu_seconds(pid) - before for pid, before in cpu_before.items()}
            figures["pipeline_cpu_ms_per_task"] = round(1000 * sum(cpu.values()) / count, 2)
            figures["agent_cpu_ms_per_task"] = round(1000 * sum(cpu[pid] for pid in agents) / count, 2)
            figures["agent_rss_peak_mb"] = round(rss.peak_mb, 1)
            if stats_url is not None:
                server = _server_stats(stats_url)
                figures["server_peak_concurrent_calls"] = server["peak_in_flight"]
                figures["server_calls"] = server["calls"]
                figures["server_closed_early"] = server["closed_early"]
            runs[tag] = figures
    finally:
        for proc in procs:
            proc.stop()
    return runs


def bench_capacity(base: Settings, *, tasks: int, ttft_s: float, stream_s: float, tokens: int, mode: str,
                   in_flight: int, queued: int, agent_workers: int, tick: Callable[[int], None]) -> dict[str, Any]:
    if mode not in ("embedded", "distributed"):
        raise OrchestrationError(f"unknown mode {mode!r}; choose embedded or distributed")
    with scratch_topics(base, "cap") as settings:
        raw_topic = f"{settings.kafka.topic_prefix}.raw-baseline"
        create_raw_topic(settings, raw_topic)
        raw = raw_kafka(settings, raw_topic, tasks, min(200, tasks), 100.0, tick)
        workers = agent_workers if mode == "distributed" else 1
        common = {"AIOS_API_PORT": "0", "AIOS_AGENT_MAX_IN_FLIGHT": str(in_flight), "AIOS_LLM_MAX_RETRIES": "0"}
        with tempfile.TemporaryDirectory(prefix="aios-bench-cap-") as tmp:
            root = Path(tmp)
            offline = _pipeline_run(settings, mode, workers, {**common, "AIOS_LLM": "offline:echo"}, root / "offline",
                                    [("offline", tasks)], tick, None)["offline"]
            server = PipelineProcess(settings, ["dev", "llm", "--port", "0", "--ttft", str(ttft_s),
                                                "--stream", str(stream_s), "--tokens", str(tokens)], root / "llm")
            try:
                server.wait_ready(60)
                doc = json.loads(server.ready_line().split("aios: ready ", 1)[1])
                llm_env = {**common, "AIOS_LLM": "openai:gpt-4o-mini", "AIOS_OPENAI_API_KEY": "sk-bench",
                           "AIOS_OPENAI_BASE_URL": doc["openai_base_url"],
                           "AIOS_LLM_TIMEOUT_S": str(max(30.0, 4 * (ttft_s + stream_s)))}
                counts = [("llm", tasks)] + ([("queued", queued)] if queued else [])
                llm_runs = _pipeline_run(settings, mode, workers, llm_env, root / "llm-run", counts, tick,
                                         doc["stats_url"])
                server_cpu_s = cpu_seconds(server.proc.pid)
            finally:
                server.stop()
    call_s = ttft_s + stream_s
    capacity = llm_runs["llm"]
    ideal = min(tasks, in_flight * workers) / call_s
    return {
        "kafka": settings.kafka.bootstrap, "mode": mode, "agent_workers": workers, "cpus": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0],
        "llm": {"ttft_s": ttft_s, "stream_s": stream_s, "tokens": tokens, "call_s": call_s,
                "server_cpu_s": round(server_cpu_s, 2)},
        "agent_max_in_flight": in_flight,
        "capacity": capacity,
        "queued": llm_runs.get("queued"),
        "offline_ceiling": offline,
        "raw_kafka": raw.__dict__,
        "ideal_tasks_per_s": round(ideal, 1),
        "ratio": {
            "capacity_over_ideal": round(capacity["tasks_per_s"] / ideal, 3),
            "capacity_over_offline_ceiling": round(capacity["tasks_per_s"] / offline["tasks_per_s"], 3),
        },
        "targets": {"embedded_tasks_per_s": 200, "distributed_tasks_per_s": 250, "calls_in_flight": 300,
                    "agent_rss_mb_with_2000_queued": 600, "share_of_offline_ceiling": 0.8},
    }
