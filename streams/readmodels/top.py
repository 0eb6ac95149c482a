"""What ``aios top`` shows, read from the topics, so it works the same against ``aios up`` and
distributed workers: agents (the compacted agents topic), tasks per role (in flight from the
project statuses, done and failed from the attempts), projects (the compacted status topic),
consumer lag per processor group (the broker), and the last dead letters.

:class:`TopState` is pure: it folds decoded events and answers :meth:`TopState.snapshot` with
optional project and role filters. :class:`TopFeed` follows the topics in a thread of its own
(stop signal, joined on :meth:`TopFeed.close`) and refreshes the lag every few seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from aios.schemas.errors import SchemaError
from aios.schemas.events import now_ms, to_ms
from aios.streams.errors import KafkaError
from aios.streams.kafka import make_codec, make_consumer, watermarks
from aios.streams.readmodels.agent_registry import is_forgotten, roles_of, shown_state
from aios.streams.settings import Settings
from aios.streams.topics import Topics, admin_client

log = logging.getLogger("aios.streams")

RATE_WINDOW_S = 10.0  # done per second is averaged over this window
DEAD_LETTERS_KEPT = 10
LAG_REFRESH_S = 3.0


@dataclass
class RoleFlow:
    role: str
    in_flight: int = 0
    done_per_s: float = 0.0
    succeeded: int = 0
    failed: int = 0


@dataclass
class Snapshot:
    """One screen of ``aios top``: every list already filtered and sorted."""

    project: str | None
    role: str | None
    agents: list[dict[str, Any]]
    roles: list[RoleFlow]
    projects: list[dict[str, Any]]
    lag: dict[str, int]
    dead_letters: list[dict[str, Any]]
    caught_up: bool
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TopState:
    """Folds the events ``aios top`` reads (pure: no Kafka; tests feed it directly)."""

    forget_after_s: float = 300.0
    agents: dict[str, dict[str, Any]] = field(default_factory=dict)
    projects: dict[str, dict[str, Any]] = field(default_factory=dict)
    # (time ms, project, role, status) of attempts seen since start, the last RATE_WINDOW_S kept for rates
    recent: deque[tuple[int, str, str, str]] = field(default_factory=lambda: deque(maxlen=100_000))
    totals: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (project, role, status) -> count
    dead_letters: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=DEAD_LETTERS_KEPT))
    lag: dict[str, int] = field(default_factory=dict)

    def agent(self, status: dict[str, Any]) -> None:
        self.agents[status["agent_id"]] = status

    def agent_gone(self, agent_id: str) -> None:
        self.agents.pop(agent_id, None)

    def project(self, status: dict[str, Any]) -> None:
        self.projects[status["project_id"]] = status

    def attempt(self, result: dict[str, Any]) -> None:
        status = "succeeded" if result["status"] == "succeeded" else "failed"
        at = to_ms(result["timestamp"])
        self.recent.append((at, result["project_id"], result["role"], status))
        key = (result["project_id"], result["role"], status)
        self.totals[key] = self.totals.get(key, 0) + 1

    def dead_letter(self, letter: dict[str, Any]) -> None:
        self.dead_letters.append(letter)

    def snapshot(self, *, project: str | None = None, role: str | None = None, now: int | None = None,
                 caught_up: bool = True, error: str | None = None) -> Snapshot:
        now = now_ms() if now is None else now
        while self.recent and now - self.recent[0][0] > RATE_WINDOW_S * 1000:
            self.recent.popleft()
        return Snapshot(project, role, self._agents(now, role), self._roles(now, project, role),
                        self._projects(project, role), dict(sorted(self.lag.items())),
                        self._dead_letters(project), caught_up, error)

    def _agents(self, now: int, role: str | None) -> list[dict[str, Any]]:
        out = []
        for s in self.agents.values():
            if is_forgotten(s, now, self.forget_after_s) or (role is not None and role not in roles_of(s)):
                continue
            out.append({"agent_id": s["agent_id"], "state": shown_state(s, now), "roles": roles_of(s),
                        "in_flight": len(s["in_flight"]), "last_heartbeat_s": round((now - to_ms(s["timestamp"])) / 1000, 1)})
        return sorted(out, key=lambda a: (a["state"] in ("gone", "stopped", "failed"), a["agent_id"]))

    def _roles(self, now: int, project: str | None, role: str | None) -> list[RoleFlow]:
        flows: dict[str, RoleFlow] = {}

        def flow(name: str) -> RoleFlow:
            return flows.setdefault(name, RoleFlow(name))

        for p, project_status in self.projects.items():
            if project is None or p == project:
                for t in project_status["tasks"]:
                    if t["state"] == "dispatched":
                        flow(t["role"]).in_flight += 1
        for (p, r, outcome), count in self.totals.items():
            if project is None or p == project:
                if outcome == "succeeded":
                    flow(r).succeeded += count
                else:
                    flow(r).failed += count
        # Attempts arrive roughly in time order, not exactly: the window is checked per attempt.
        recent = [x for x in self.recent if 0 <= now - x[0] <= RATE_WINDOW_S * 1000]
        window = min(RATE_WINDOW_S, max(1.0, (now - min(x[0] for x in recent)) / 1000)) if recent else RATE_WINDOW_S
        for _, p, r, _status in recent:
            if project is None or p == project:
                flow(r).done_per_s += 1 / window
        for f in flows.values():
            f.done_per_s = round(f.done_per_s, 1)
        return sorted((f for f in flows.values() if role is None or f.role == role), key=lambda f: f.role)

    def _projects(self, project: str | None, role: str | None) -> list[dict[str, Any]]:
        out = []
        for p, s in sorted(self.projects.items()):
            if project is not None and p != project:
                continue
            if role is not None and not any(t["role"] == role for t in s["tasks"]):
                continue
            out.append({"project_id": p, "state": s["state"], "percent_done": round(float(s["percent_done"]), 1),
                        "cost_usd": float(s["cost_usd"]), "counts": dict(s["counts"]), "notes": list(s["notes"])})
        return out

    def _dead_letters(self, project: str | None) -> list[dict[str, Any]]:
        letters = [d for d in self.dead_letters if project is None or (d.get("key") or "") == project]
        return [{"at_ms": to_ms(d["timestamp"]), "processor": d["processor"], "source": f"{d['source_topic']}"
                 f"[{d['source_partition']}]@{d['source_offset']}", "error_type": d["error_type"],
                 "error": str(d["error"])[:200]} for d in reversed(letters)]


class TopFeed:
    """Follows the topics into a :class:`TopState` in a thread; :meth:`snapshot` is safe from any thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = Topics.from_settings(settings)
        self.codec = make_codec(settings)
        self.state = TopState(forget_after_s=settings.processing.agent_forget_after_s)
        self.error: str | None = None
        self.caught_up = threading.Event()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="aios-top-feed", daemon=True)
        self._admin: AdminClient | None = None
        self._lag_at = 0.0

    def start(self) -> TopFeed:
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the thread and wait for it: its Kafka clients must close before the process exits
        (librdkafka objects left to the interpreter's exit can hang it)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def snapshot(self, *, project: str | None = None, role: str | None = None) -> Snapshot:
        with self._lock:
            return self.state.snapshot(project=project, role=role, caught_up=self.caught_up.is_set(),
                                       error=self.error)

    def _assignment(self, consumer: Any) -> tuple[list[TopicPartition], dict[tuple[str, int], int]]:
        t = self.topics
        starts = {t.agents: "beginning", t.project_status: "beginning", t.attempts: "end", t.dlq: "last"}
        assignment, ends = [], {}
        for topic, start in starts.items():
            meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
            if meta is None or meta.error is not None or not meta.partitions:
                raise KafkaError(f"topic {topic!r} does not exist; create the topics with `aios topics create`")
            for p in meta.partitions:
                low, high = watermarks(consumer, TopicPartition(topic, p))
                offset = {"beginning": low, "end": high, "last": max(low, high - DEAD_LETTERS_KEPT)}[start]
                assignment.append(TopicPartition(topic, p, offset))
                if high > offset:
                    ends[(topic, p)] = high
        return assignment, ends

    def _run(self) -> None:
        consumer = make_consumer(self.settings, group=f"aios-top-{time.time_ns()}", **{"enable.partition.eof": True})
        try:
            assignment, ends = self._assignment(consumer)
            consumer.assign(assignment)
            if not ends:
                self.caught_up.set()
            while not self._stop.is_set():
                for msg in consumer.consume(500, 0.2):
                    err = msg.error()
                    if err is not None:
                        if err.code() == err._PARTITION_EOF:
                            ends.pop((str(msg.topic()), int(msg.partition() or 0)), None)
                            if not ends:
                                self.caught_up.set()
                        continue
                    self._apply(str(msg.topic()), msg.key(), msg.value())
                if time.monotonic() - self._lag_at >= LAG_REFRESH_S:
                    self._refresh_lag()
        except (KafkaError, KafkaException) as exc:
            self.error = str(exc)
            log.warning("aios top: %s", exc)
        finally:
            consumer.close()
            self._admin = None  # released in this thread, not at the interpreter's exit

    def _apply(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        t = self.topics
        if value is None:
            if topic == t.agents and key:
                with self._lock:
                    self.state.agent_gone(key.decode(errors="replace"))
            return
        try:
            v = self.codec.decode(value).value
        except SchemaError:
            return  # undecodable bytes are the DLQ's business
        with self._lock:
            if topic == t.agents:
                self.state.agent(v)
            elif topic == t.project_status:
                self.state.project(v)
            elif topic == t.attempts:
                self.state.attempt(v)
            elif topic == t.dlq:
                self.state.dead_letter(v)

    def _refresh_lag(self) -> None:
        self._lag_at = time.monotonic()
        try:
            lag = group_lag(self._admin_client(), f"{self.settings.kafka.topic_prefix}-", stop=self._stop)
        except KafkaException as exc:
            log.info("aios top: consumer lag unavailable: %s", exc)
            return
        with self._lock:
            self.state.lag = lag

    def _admin_client(self) -> AdminClient:
        if self._admin is None:
            self._admin = admin_client(self.settings)
        return self._admin


def group_lag(admin: AdminClient, prefix: str, timeout_s: float = 3.0,
              stop: threading.Event | None = None) -> dict[str, int]:
    """Records each consumer group named ``<prefix>…`` has yet to commit, over every partition it committed on.

    A group that reads positions from its own log (the orchestrator) commits too, for this."""
    groups = [g.group_id for g in admin.list_consumer_groups(request_timeout=timeout_s).result(timeout_s).valid
              if g.group_id.startswith(prefix)]
    out: dict[str, int] = {}
    for group in sorted(groups):
        if stop is not None and stop.is_set():
            break
        answer = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=timeout_s)
        committed = [tp for tp in answer[group].result(timeout=timeout_s).topic_partitions if tp.offset >= 0]
        if not committed:
            continue
        futures = admin.list_offsets({TopicPartition(tp.topic, tp.partition): OffsetSpec.latest()  # type: ignore[no-untyped-call]
                                      for tp in committed}, request_timeout=timeout_s)
        highs = {(tp.topic, tp.partition): f.result(timeout=timeout_s).offset for tp, f in futures.items()}
        out[group.removeprefix(prefix)] = sum(max(highs[(tp.topic, tp.partition)] - tp.offset, 0) for tp in committed)
    return out
