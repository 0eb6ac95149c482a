"""The API's live view of the pipeline, read from the topics: tasks, results, project statuses, agents.

A thread reads the topics with an assigned (group-less) consumer, from the beginning, and keeps the
latest state of each task (bounded, oldest dropped first), project and agent. Subscribers (the
WebSocket hub) get every decoded event as it arrives.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError as CKafkaError
from confluent_kafka import KafkaException, TopicPartition

from aios.schemas.codec import Codec
from aios.schemas.errors import SchemaError
from aios.schemas.events import to_ms
from aios.streams.errors import KafkaError
from aios.streams.kafka import make_codec, make_consumer, watermarks
from aios.streams.settings import Settings
from aios.streams.topics import Topics

log = logging.getLogger(__name__)

MAX_TASKS = 100_000  # tasks remembered; older ones are dropped first (ClickHouse keeps the history)


@dataclass(frozen=True)
class LiveEvent:
    """One decoded event; ``id`` is its Kafka position, which a client can resume from."""

    id: str
    type: str  # the topic's short name: tasks, results, project-status, agents, attempts, ...
    project_id: str | None
    timestamp_ms: int
    data: dict[str, Any]


@dataclass
class TaskRecord:
    task_id: str
    project_id: str
    role: str = ""
    description: str = ""
    state: str = "submitted"
    attempts: int = 0
    reason: str = ""
    submitted_ms: int = 0
    result: dict[str, Any] | None = None


@dataclass
class _State:
    tasks: OrderedDict[tuple[str, str], TaskRecord] = field(default_factory=OrderedDict)
    by_id: dict[str, set[str]] = field(default_factory=dict)  # task id -> projects that have it
    projects: dict[str, dict[str, Any]] = field(default_factory=dict)
    edges: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # project -> task -> depends_on
    agents: dict[str, dict[str, Any]] = field(default_factory=dict)


Subscriber = Callable[[list[LiveEvent]], None]


def _topic_metadata(consumer: Any, topic: str, wait_s: float = 5.0) -> Any:
    """A topic's metadata, waiting briefly for a just-created topic to show up; None if it never does."""
    deadline = time.monotonic() + wait_s
    while True:
        tmeta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if tmeta is not None and tmeta.error is None and tmeta.partitions:
            return tmeta
        if time.monotonic() > deadline:
            return None
        time.sleep(0.2)


class LiveView:
    """Call :meth:`start`, then read with the accessors; :meth:`close` stops the thread."""

    def __init__(self, settings: Settings, codec: Codec | None = None) -> None:
        self.settings = settings
        self.topics = Topics.from_settings(settings)
        self.codec = codec or make_codec(settings)
        self.short = {self.topics.projects: "plans", self.topics.tasks: "tasks", self.topics.results: "results",
                      self.topics.project_status: "project-status", self.topics.agents: "agents",
                      self.topics.attempts: "attempts", self.topics.llm_calls: "llm-calls",
                      self.topics.messages: "messages", self.topics.dlq: "dlq"}
        self._lock = threading.Lock()
        self._state = _State()
        self._subscribers: list[Subscriber] = []
        self._stop = threading.Event()
        self.caught_up = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: str | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self, timeout_s: float = 30.0) -> None:
        """Start reading; return once the view has caught up with what the topics held at start."""
        # EOF events mark each partition's end: on topics written in transactions (results,
        # project-status) the last offset is a commit marker no record ever carries.
        consumer = make_consumer(self.settings, group=f"aios-api-view-{time.time_ns()}",
                                 **{"enable.partition.eof": True})
        try:
            assignment, ends = [], {}
            for topic in self.short:
                tmeta = _topic_metadata(consumer, topic)
                if tmeta is None:
                    consumer.close()
                    raise KafkaError(f"topic {topic!r} does not exist; create the topics with `aios topics create`")
                for p in tmeta.partitions:
                    low, high = watermarks(consumer, TopicPartition(topic, p))
                    assignment.append(TopicPartition(topic, p, low))
                    if high > low:
                        ends[(topic, p)] = high
        except KafkaException as exc:
            consumer.close()
            raise KafkaError(f"Kafka at {self.settings.kafka.bootstrap} did not answer: {exc}") from exc
        consumer.assign(assignment)
        self._thread = threading.Thread(target=self._run, args=(consumer, ends), name="aios-api-view", daemon=True)
        self._thread.start()
        if not self.caught_up.wait(timeout_s):
            raise KafkaError(f"the API's view did not catch up with the topics within {timeout_s:.0f}s")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call ``subscriber`` (from the view's thread) with each batch of new events; returns the unsubscribe."""
        with self._lock:
            self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            with self._lock:
                if subscriber in self._subscribers:
                    self._subscribers.remove(subscriber)
        return unsubscribe

    def _run(self, consumer: Any, ends: dict[tuple[str, int], int]) -> None:
        if not ends:
            self.caught_up.set()
        try:
            while not self._stop.is_set():
                batch: list[LiveEvent] = []
                for msg in consumer.consume(500, 0.1):
                    err = msg.error()
                    if err is not None:
                        if err.code() == CKafkaError._PARTITION_EOF:
                            ends.pop((msg.topic(), msg.partition()), None)
                            if not ends:
                                self.caught_up.set()
                        else:
                            log.warning("api view: %s", err)
                        continue
                    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
                    if ends and ends.get((topic, partition), -1) <= offset + 1:
                        ends.pop((topic, partition), None)
                        if not ends:
                            self.caught_up.set()
                    if msg.value() is None:  # a tombstone: on the agents topic, a worker that stopped
                        gone = self._forget(self.short[topic], f"{topic}:{partition}:{offset}", msg.key())
                        if gone is not None:
                            batch.append(gone)
                        continue
                    try:
                        decoded = self.codec.decode(msg.value())
                    except SchemaError:
                        continue  # undecodable bytes are the DLQ's business, not the view's
                    batch.append(self._apply(self.short[topic], f"{topic}:{partition}:{offset}", decoded.value))
                if batch:
                    with self._lock:
                        subscribers = list(self._subscribers)
                    for subscriber in subscribers:
                        subscriber(batch)
        except Exception as exc:  # the thread must report why it stopped, whatever it was
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("api view stopped: %s", self.error)
            raise
        finally:
            consumer.close()

    # -- state ---------------------------------------------------------------------------------
    def _forget(self, kind: str, event_id: str, key: bytes | None) -> LiveEvent | None:
        """An agent's tombstone: drop it, and tell subscribers with ``{"agent_id", "removed": true}``."""
        if kind != "agents" or not key:
            return None
        agent_id = key.decode(errors="replace")
        with self._lock:
            self._state.agents.pop(agent_id, None)
        return LiveEvent(event_id, kind, None, int(time.time() * 1000), {"agent_id": agent_id, "removed": True})

    def _apply(self, kind: str, event_id: str, v: dict[str, Any]) -> LiveEvent:
        event = LiveEvent(event_id, kind, v.get("project_id"), to_ms(v["timestamp"]), v)
        with self._lock:
            s = self._state
            if kind == "plans":
                s.edges[v["project_id"]] = {t["task_id"]: list(t["depends_on"]) for t in v["tasks"]}
                for t in v["tasks"]:
                    self._task(v["project_id"], t["task_id"], role=t["role"], description=t["description"],
                               submitted_ms=event.timestamp_ms)
            elif kind == "tasks":
                self._task(v["project_id"], v["task_id"], role=v["role"], description=v["description"],
                           submitted_ms=event.timestamp_ms)
            elif kind == "results":
                self._task(v["project_id"], v["task_id"], role=v["role"], state=v["status"],
                           attempts=v["attempt"], reason=v["error"] or "", result=v)
            elif kind == "attempts":
                rec = self._task(v["project_id"], v["task_id"], role=v["role"])
                rec.attempts = max(rec.attempts, v["attempt"])
            elif kind == "project-status":
                s.projects[v["project_id"]] = v
                for t in v["tasks"]:
                    rec = self._task(v["project_id"], t["task_id"], role=t["role"])
                    if rec.result is None:  # the terminal result is authoritative
                        rec.state, rec.attempts, rec.reason = t["state"], t["attempts"], t["reason"]
            elif kind == "agents":
                s.agents[v["agent_id"]] = v
        return event

    def _task(self, project: str, task_id: str, **update: Any) -> TaskRecord:
        s = self._state
        key = (project, task_id)
        rec = s.tasks.get(key)
        if rec is None:
            rec = s.tasks[key] = TaskRecord(task_id, project)
            s.by_id.setdefault(task_id, set()).add(project)
            if len(s.tasks) > MAX_TASKS:
                (old_project, old_id), _ = s.tasks.popitem(last=False)
                projects = s.by_id.get(old_id, set())
                projects.discard(old_project)
                if not projects:
                    s.by_id.pop(old_id, None)
        else:
            s.tasks.move_to_end(key)
        for name, value in update.items():
            if value is not None:
                setattr(rec, name, value)
        return rec

    # -- reads ---------------------------------------------------------------------------------
    def find_task(self, task_id: str, visible: Callable[[str], bool]) -> TaskRecord | None:
        """The most recent task with this id in a project ``visible`` accepts."""
        with self._lock:
            candidates = [self._state.tasks[(p, task_id)] for p in self._state.by_id.get(task_id, ())
                          if visible(p) and (p, task_id) in self._state.tasks]
        return max(candidates, key=lambda r: r.submitted_ms, default=None)

    def project(self, project: str) -> dict[str, Any] | None:
        with self._lock:
            return self._state.projects.get(project)

    def projects(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return dict(self._state.projects)

    def edges(self, project: str) -> dict[str, list[str]]:
        with self._lock:
            return dict(self._state.edges.get(project, {}))

    def project_tasks(self, project: str) -> list[TaskRecord]:
        with self._lock:
            return [r for (p, _), r in self._state.tasks.items() if p == project]

    def agents(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._state.agents.values())
