"""The live agent registry: the latest AgentStatus of every worker, from the compacted agents topic.

The orchestrator keeps one to report roles that no live agent serves (their tasks would
otherwise wait in silence) and to export each role's load; ``aios agents`` reads the same rules.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import faust
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from aios.schemas.errors import SchemaError, UnavailableError
from aios.schemas.events import now_ms, to_ms
from aios.streams.engine.failures import Backoff
from aios.streams.engine.runtime import Runtime
from aios.streams.errors import KafkaError
from aios.streams.kafka import make_consumer
from aios.streams.metrics import ROLE_IN_FLIGHT, ROLE_LIVE_AGENTS

STALE_INTERVALS = 3  # heartbeats a live agent may miss before it is marked stale
GONE = frozenset({"stopped", "failed"})
log = logging.getLogger("aios.streams")


def is_stale(status: dict[str, Any], now: int) -> bool:
    """Not stopped, yet silent for more than three heartbeat intervals (killed without a word)."""
    silent_ms = now - to_ms(status["timestamp"])
    return status["state"] not in GONE and silent_ms > STALE_INTERVALS * status["heartbeat_interval_ms"]


def is_live(status: dict[str, Any], now: int) -> bool:
    return status["state"] not in GONE and status["state"] != "draining" and not is_stale(status, now)


def roles_of(status: dict[str, Any]) -> list[str]:
    return list(status["roles"] or [status["role"]])


class AgentRegistry(faust.Service):
    """Follows the agents topic in a background thread; ``live_roles()`` is None until caught up."""

    def __init__(self, rt: Runtime, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rt = rt
        self.latest: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._caught_up = False

    def live_roles(self, now: int | None = None) -> set[str] | None:
        if not self._caught_up:
            return None  # unknown yet: better no note than a false "no live agent"
        now = now_ms() if now is None else now
        with self._lock:
            return {r for s in self.latest.values() if is_live(s, now) for r in roles_of(s)}

    def role_load(self, now: int | None = None) -> dict[str, tuple[int, int]]:
        """Per role: (live agents, tasks in flight)."""
        now = now_ms() if now is None else now
        load: dict[str, tuple[int, int]] = {}
        with self._lock:
            for s in self.latest.values():
                if is_live(s, now):
                    for r in roles_of(s):
                        agents, busy = load.get(r, (0, 0))
                        load[r] = (agents + 1, busy + len(s["in_flight"]))
        return load

    @faust.Service.task
    async def _follow(self) -> None:
        await asyncio.to_thread(self._follow_blocking)

    def _follow_blocking(self) -> None:
        s, topic = self.rt.settings, self.rt.topics.agents
        consumer = make_consumer(s, group=f"{s.kafka.topic_prefix}-agent-registry", **{"enable.partition.eof": True})
        try:
            deadline = time.monotonic() + 30
            while True:  # a topic created a moment ago may not be in the metadata yet
                meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
                if meta is not None and meta.error is None and meta.partitions:
                    break
                if time.monotonic() > deadline:
                    raise KafkaError(f"topic {topic!r} does not exist; create the topics with `aios topics create`")
                time.sleep(0.5)
            consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
            at_end: set[int] = set()
            while not self.should_stop:
                for msg in consumer.consume(500, 0.5):
                    err = msg.error()
                    if err is not None:
                        if err.code() == err._PARTITION_EOF:
                            at_end.add(int(msg.partition() or 0))
                            self._caught_up = self._caught_up or at_end >= set(meta.partitions)
                        continue
                    self._apply(msg.value())
                self._export()
        finally:
            consumer.close()

    def _apply(self, value: bytes | None) -> None:
        backoff = Backoff()
        while True:
            try:
                status = self.rt.codec.decode(value, expect="AgentStatus").value
                break
            except SchemaError as exc:
                log.warning("agent registry: skipped an undecodable status: %s", exc)
                return
            except UnavailableError as exc:  # the registry: not the status's fault, so wait for it
                if self.should_stop:
                    return
                delay = backoff.delay()
                log.warning("agent registry: %s; trying again in %.1fs", exc, delay)
                time.sleep(delay)
        with self._lock:
            self.latest[status["agent_id"]] = status

    def _export(self) -> None:
        load = self.role_load()
        for role in self.rt.settings.processing.roles:
            agents, busy = load.get(role, (0, 0))
            ROLE_LIVE_AGENTS.labels(role).set(agents)
            ROLE_IN_FLIGHT.labels(role).set(busy)
