"""The API's live view of the pipeline, read from the topics: tasks, results, project statuses, agents.

A thread reads the topics with an assigned (group-less) consumer, from the beginning, and keeps the
latest state of each task, project and agent. Subscribers (the WebSocket hub) get every decoded
event as it arrives, with restricted fields opened when this API holds AIOS_ENCRYPTION_KEY.

The tasks it remembers are bounded per project (``AIOS_API_VIEW_TASKS_PER_PROJECT``: a project's
oldest go first) and in all (``AIOS_API_VIEW_TASKS``: then the project holding the most loses its
oldest), so no tenant's traffic can push another tenant's tasks out of the view.
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
from aios.schemas.sealed import is_sealed
from aios.streams.errors import KafkaError
from aios.streams.kafka import make_codec, make_consumer, watermarks
from aios.streams.sealing import Sealer
from aios.streams.settings import Settings
from aios.streams.topics import Topics

log = logging.getLogger(__name__)


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
    sealed: bool = False  # its description or output is sealed with a key this API does not hold


class TaskTable:
    """Task records by (project, task), least recently updated first within each project.

    Bounded per project and in all; over the total, the largest project gives up its oldest, so a
    project under its fair share never loses a task to another's traffic.
    """

    def __init__(self, per_project: int, total: int) -> None:
        self.per_project = per_project
        self.total = total
        self.projects: dict[str, OrderedDict[str, TaskRecord]] = {}
        self.by_id: dict[str, set[str]] = {}  # task id -> projects that have it
        self.size = 0
        # Projects by how many tasks they hold, to find the largest in O(1) as counts move by one.
        self._by_count: dict[int, set[str]] = {}
        self._largest = 0

    def get(self, project: str, task_id: str) -> TaskRecord | None:
        tasks = self.projects.get(project)
        return None if tasks is None else tasks.get(task_id)

    def touch(self, rec: TaskRecord) -> None:
        self.projects[rec.project_id].move_to_end(rec.task_id)

    def add(self, rec: TaskRecord) -> None:
        tasks = self.projects.setdefault(rec.project_id, OrderedDict())
        self._recount(rec.project_id, len(tasks), len(tasks) + 1)
        tasks[rec.task_id] = rec
        self.by_id.setdefault(rec.task_id, set()).add(rec.project_id)
        self.size += 1
        if len(tasks) > self.per_project:
            self._drop_oldest(rec.project_id)
        if self.size > self.total:
            self._drop_oldest(next(iter(self._by_count[self._largest])))

    def in_project(self, project: str) -> list[TaskRecord]:
        return list(self.projects.get(project, {}).values())

    def _drop_oldest(self, project: str) -> None:
        tasks = self.projects[project]
        task_id, _ = tasks.popitem(last=False)
        self._recount(project, len(tasks) + 1, len(tasks))
        self.size -= 1
        holders = self.by_id.get(task_id, set())
        holders.discard(project)
        if not holders:
            self.by_id.pop(task_id, None)
        if not tasks:
            del self.projects[project]

    def _recount(self, project: str, old: int, new: int) -> None:
        if old:
            bucket = self._by_count[old]
            bucket.discard(project)
            if not bucket:
                del self._by_count[old]
        if new:
            self._by_count.setdefault(new, set()).add(project)
        if new > self._largest:
            self._largest = new
        while self._largest and self._largest not in self._by_count:
            self._largest -= 1


@dataclass
class _State:
    tasks: TaskTable
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

    def __init__(self, settings: Settings, codec: Codec | None = None, sealer: Sealer | None = None) -> None:
        self.settings = settings
        self.topics = Topics.from_settings(settings)
        self.codec = codec or make_codec(settings)
        self.sealer = sealer or Sealer.from_settings(settings)
        self.short = {self.topics.projects: "plans", self.topics.tasks: "tasks", self.topics.results: "results",
                      self.topics.project_status: "project-status", self.topics.agents: "agents",
                      self.topics.attempts: "attempts", self.topics.llm_calls: "llm-calls",
                      self.topics.messages: "messages", self.topics.dlq: "dlq", self.topics.tokens: "tokens"}
        # Live only: tokens are read from their end (an hour of them is not state worth replaying).
        self.live_only = {self.topics.tokens}
        self._lock = threading.Lock()
        self._state = _State(TaskTable(settings.api.view_tasks_per_project, settings.api.view_tasks))
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
                    if topic in self.live_only:
                        assignment.append(TopicPartition(topic, p, high))
                        continue
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

    def reveal(self, kind: str, v: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """The event with its restricted fields opened (when this API holds the key), and whether
        any stayed sealed."""
        return self.sealer.reveal_event(kind, v)

    def _apply(self, kind: str, event_id: str, v: dict[str, Any]) -> LiveEvent:
        v, _ = self.reveal(kind, v)
        event = LiveEvent(event_id, kind, v.get("project_id"), to_ms(v["timestamp"]), v)
        with self._lock:
            s = self._state
            if kind == "plans":
                s.edges[v["project_id"]] = {t["task_id"]: list(t["depends_on"]) for t in v["tasks"]}
                for t in v["tasks"]:
                    self._task(v["project_id"], t["task_id"], role=t["role"], description=t["description"],
                               submitted_ms=event.timestamp_ms, sealed=is_sealed(t["description"]) or None)
            elif kind == "tasks":
                self._task(v["project_id"], v["task_id"], role=v["role"], description=v["description"],
                           submitted_ms=event.timestamp_ms, sealed=is_sealed(v["description"]) or None)
            elif kind == "results":
                self._task(v["project_id"], v["task_id"], role=v["role"], state=v["status"],
                           attempts=v["attempt"], reason=v["error"] or "", result=v,
                           sealed=is_sealed(v["output"]) or None)
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
        tasks = self._state.tasks
        rec = tasks.get(project, task_id)
        if rec is None:
            rec = TaskRecord(task_id, project)
            tasks.add(rec)
        else:
            tasks.touch(rec)
        for name, value in update.items():
            if value is not None:
                setattr(rec, name, value)
        return rec

    # -- reads ---------------------------------------------------------------------------------
    def find_task(self, task_id: str, visible: Callable[[str], bool]) -> TaskRecord | None:
        """The most recent task with this id in a project ``visible`` accepts."""
        with self._lock:
            tasks = self._state.tasks
            candidates = [rec for p in tasks.by_id.get(task_id, ())
                          if visible(p) and (rec := tasks.get(p, task_id)) is not None]
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
            return self._state.tasks.in_project(project)

    def agents(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._state.agents.values())
