"""A steady stream of tasks into the pipeline, and a live watch of the committed results, for tests
that break something underneath (a broker, a certificate) and count what comes out."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Producer, TopicPartition

from aios.streams.kafka import make_codec, make_consumer, producer_config
from aios.streams.readmodels.task_client import build_task
from aios.streams.settings import Settings
from aios.streams.topics import Topics

TaskKey = tuple[str, str]  # (project_id, task_id)


class SteadyLoad(threading.Thread):
    """Produces ``rate`` tasks a second, on a fixed schedule, through an idempotent acks=all
    producer; remembers which tasks the broker acknowledged, and when."""

    def __init__(self, settings: Settings, rate: float, *, projects: int = 10, label: str = "load") -> None:
        super().__init__(daemon=True, name="steady-load")
        self.settings, self.rate, self.projects, self.label = settings, rate, projects, label
        self.topic = Topics.from_settings(settings).tasks
        self.sent: dict[TaskKey, float] = {}
        self.acked: dict[TaskKey, float] = {}
        self.failed: dict[TaskKey, str] = {}
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._produce()
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def _produce(self) -> None:
        codec = make_codec(self.settings)
        producer = Producer(producer_config(self.settings, log_level=0))
        start, i = time.monotonic(), 0
        while not self._halt.is_set():
            delay = start + i / self.rate - time.monotonic()
            if delay > 0:
                producer.poll(delay)
                continue
            project = f"{self.label}-{i % self.projects}"
            key = (project, f"{self.label}-t{i}")
            task = build_task(f"{self.label} task {i}", project=project, task_id=key[1], submitted_by="test")
            producer.produce(self.topic, codec.encode("Task", task, self.topic), key=project,
                             on_delivery=lambda err, _msg, key=key: self._delivered(key, err))
            with self._lock:
                self.sent[key] = time.monotonic()
            i += 1
        left = producer.flush(300)
        if left:
            raise AssertionError(f"{left} tasks still unacknowledged 300 s after the load stopped")

    def _delivered(self, key: TaskKey, err: Any) -> None:
        with self._lock:
            if err is None:
                self.acked[key] = time.monotonic()
            else:
                self.failed[key] = str(err)

    def stop(self) -> None:
        self._halt.set()
        self.join(330)
        if self.error is not None:
            raise self.error

    def acked_since(self, moment: float) -> list[float]:
        with self._lock:
            return sorted(t for t in self.acked.values() if t >= moment)


@dataclass
class Arrivals:
    times: list[tuple[float, TaskKey]] = field(default_factory=list)
    per_task: Counter[TaskKey] = field(default_factory=Counter)


class ResultWatch(threading.Thread):
    """Reads ``aios.results`` (read_committed) from the beginning while the test runs, noting when
    each result arrived."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True, name="result-watch")
        self.settings = settings
        self.topic = Topics.from_settings(settings).results
        self.arrivals = Arrivals()
        self._halt = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        codec = make_codec(self.settings)
        consumer = make_consumer(self.settings, group=f"{self.settings.kafka.topic_prefix}-watch", log_level=0)
        meta = consumer.list_topics(self.topic, timeout=30)
        consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in meta.topics[self.topic].partitions])
        try:
            while not self._halt.is_set():
                for msg in consumer.consume(500, 0.2):
                    if msg.error() is not None:
                        continue  # a leader moving: the fetcher goes on
                    value = codec.decode(msg.value()).value
                    key = (value["project_id"], value["task_id"])
                    with self._lock:
                        self.arrivals.times.append((time.monotonic(), key))
                        self.arrivals.per_task[key] += 1
        finally:
            consumer.close()

    def count(self) -> int:
        with self._lock:
            return len(self.arrivals.per_task)

    def has(self, keys: set[TaskKey]) -> set[TaskKey]:
        """Those of ``keys`` with no result yet."""
        with self._lock:
            return {k for k in keys if k not in self.arrivals.per_task}

    def first_after(self, moment: float, *, produced_after: dict[TaskKey, float] | None = None) -> float | None:
        """Seconds from ``moment`` to the first result that arrived after it (optionally: of a task
        produced after it)."""
        with self._lock:
            for at, key in self.arrivals.times:
                if at < moment:
                    continue
                if produced_after is not None and produced_after.get(key, 0.0) < moment:
                    continue
                return at - moment
        return None

    def longest_gap(self, since: float, until: float) -> float:
        with self._lock:
            return longest_gap([at for at, _ in self.arrivals.times], since, until)

    def stop(self) -> None:
        self._halt.set()
        self.join(30)


def longest_gap(times: list[float], since: float, until: float) -> float:
    """The longest stretch between ``since`` and ``until`` with none of ``times`` in it."""
    marks = [since, *sorted(t for t in times if since <= t <= until), until]
    return max(b - a for a, b in zip(marks, marks[1:], strict=False))
