"""What every bench uses: percentiles, a fixed-rate sender, a wall-and-CPU clock, scratch topics
(created for one run and deleted after it), and a runner for `aios` processes of the pipeline."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from aios.devstack.supervisor import free_port
from aios.streams.errors import OrchestrationError
from aios.streams.kafka import make_consumer, producer_config, watermarks
from aios.streams.settings import Settings
from aios.streams.topics import admin_client, create_topics, delete_topics, replication_for, wait_for_leaders


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[idx]


def send_paced(count: int, rate: float, send: Callable[[int], None]) -> None:
    """Send ``count`` items at ``rate``/s on a fixed schedule (no coordinated omission)."""
    start = time.perf_counter()
    for i in range(count):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        send(i)


def create_raw_topic(settings: Settings, name: str) -> None:
    """The plain topic that a bench's raw confluent-kafka baseline runs on, beside its own topics."""
    admin = admin_client(settings)  # keep a reference: futures fail if the client is collected
    plan = replication_for(settings, len(admin.list_topics(timeout=30).brokers))  # as the AIOS topics get
    admin.create_topics([NewTopic(name, num_partitions=settings.kafka.topic_partitions,
                                  replication_factor=plan.factor,
                                  config={"min.insync.replicas": str(plan.min_insync)})])[name].result(30)
    wait_for_leaders(admin, {name: settings.kafka.topic_partitions})


class PipelineProcess:
    """One ``aios`` process of the pipeline, on the bench's prefix and its own data directory."""

    def __init__(self, settings: Settings, command: list[str], data_dir: Path,
                 env_extra: dict[str, str] | None = None) -> None:
        env = {**os.environ,
               "AIOS_TOPIC_PREFIX": settings.kafka.topic_prefix, "AIOS_DATA_DIR": str(data_dir),
               "AIOS_KAFKA_BOOTSTRAP": settings.kafka.bootstrap, "AIOS_REDIS_URL": settings.stores.redis_url,
               "AIOS_LLM": "offline:echo", "AIOS_METRICS_PORT": "0", "AIOS_ROLES": ",".join(settings.processing.roles),
               # `aios up`'s own servers on free ports: a bench must not collide with a running stack.
               "AIOS_API_PORT": str(free_port()), "AIOS_CLICKHOUSE_HTTP_PORT": str(free_port()),
               "AIOS_CLICKHOUSE_TCP_PORT": str(free_port()), "AIOS_QDRANT_LOCAL_PORT": str(free_port()),
               **(env_extra or {})}
        code = "import sys; from aios.cli import main; sys.argv[0] = 'aios'; main()"
        # Our own interpreter running our own CLI: no untrusted input reaches the command line.
        self.proc = subprocess.Popen(  # noqa: S603
            [sys.executable, "-c", code, *command], env=env, stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL, text=True)
        self._log: list[str] = []
        self.command = command

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        deadline = time.monotonic() + timeout_s
        stderr = self.proc.stderr
        if stderr is None:
            raise OrchestrationError("pipeline process has no stderr pipe")
        while time.monotonic() < deadline:
            line = stderr.readline()
            if not line and self.proc.poll() is not None:
                break
            self._log.append(line)
            if "aios: ready" in line:
                threading.Thread(target=self._drain, daemon=True).start()
                return
        self.stop()
        raise OrchestrationError(f"`aios {' '.join(self.command)}` did not become ready:\n"
                                 + "".join(self._log[-20:]))

    def ready_line(self) -> str:
        """The line that said the process was ready (``aios dev llm`` puts its URLs in it)."""
        return next((line for line in reversed(self._log) if "aios: ready" in line), "")

    def _drain(self) -> None:
        for line in self.proc.stderr or ():
            self._log.append(line)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@contextmanager
def scratch_topics(base: Settings, prefix: str) -> Iterator[Settings]:
    """The settings of a bench's own topics, created for it and deleted after it: a bench left
    behind per run once filled the local broker (hundreds of prefixes, thousands of partitions)."""
    settings = base.replace(topic_prefix=f"{prefix}{int(time.time())}")
    create_topics(settings)
    try:
        yield settings
    finally:
        delete_topics(settings)


class Clock:
    """Wall and CPU seconds (all the process's threads: ClickHouse's too) since it was made."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


# --- the raw confluent-kafka baseline, on the same broker -------------------------------------

@dataclass(frozen=True)
class Figures:
    """Throughput of a burst, and latency at a fixed offered rate."""

    count: int
    throughput_per_s: float
    latency_count: int
    offered_rate_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float


def latency_figures(latencies: list[float]) -> tuple[float, float, float]:
    return percentile(latencies, 50), percentile(latencies, 99), max(latencies)


def raw_kafka(settings: Settings, topic: str, burst: int, paced: int, rate: float,
              tick: Callable[[int], None]) -> Figures:
    producer = Producer(producer_config(settings, **{"linger.ms": 1}))
    consumer = make_consumer(settings, group=f"bench-raw-{time.time_ns()}",
                             **{"fetch.wait.max.ms": 1, "topic.metadata.refresh.interval.ms": 1000})
    assign_at_end(consumer, topic)

    def run(count: int, pace: float | None) -> tuple[float, list[float]]:
        sent: dict[bytes, float] = {}
        latencies: list[float] = []

        def send(i: int) -> None:
            key = f"{time.time_ns()}-{i}".encode()
            sent[key] = time.perf_counter()
            producer.produce(topic, value=b"x" * 120, key=key)
            producer.poll(0)

        def produce_all() -> None:
            def send_now(i: int) -> None:
                send(i)
                producer.flush(0)

            if pace:
                send_paced(count, pace, send_now)
            else:
                for i in range(count):
                    send(i)
            producer.flush(30)

        t0 = time.perf_counter()
        thread = threading.Thread(target=produce_all)
        thread.start()
        got = 0
        deadline = time.monotonic() + 60
        while got < count and time.monotonic() < deadline:
            msg = consumer.poll(0.05)
            if msg is None or msg.error() is not None:
                continue
            sent_at = sent.get(msg.key() or b"")
            if sent_at is not None:
                latencies.append((time.perf_counter() - sent_at) * 1000)
                got += 1
                tick(1)
        elapsed = time.perf_counter() - t0
        thread.join()
        if got < count:
            raise OrchestrationError(f"raw baseline: consumed {got} of {count} messages within 60s")
        return elapsed, latencies

    run(min(200, paced), rate)  # warm-up, as for the pipeline: leaders known, fetches flowing
    _, latencies = run(paced, rate)
    burst_elapsed, _ = run(burst, None)
    consumer.close()
    p50, p99, worst = latency_figures(latencies)
    return Figures(burst, burst / burst_elapsed, len(latencies), rate, p50, p99, worst)


def assign_at_end(consumer: Consumer, topic: str) -> None:
    """Read every partition of ``topic`` from its current end (no group rebalance)."""
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    parts = []
    for p in meta.partitions:
        _, high = watermarks(consumer, TopicPartition(topic, p))
        parts.append(TopicPartition(topic, p, high))
    consumer.assign(parts)
