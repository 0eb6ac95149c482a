"""The live agent registry: the latest AgentStatus of every worker, from the compacted agents topic.

The orchestrator keeps one to report roles that no live agent serves (their tasks would
otherwise wait in silence) and to export each role's load; ``aios agents`` reads the same rules.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterable
from contextlib import suppress
from typing import Any

import faust
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from aios.schemas.errors import SchemaError, UnavailableError
from aios.schemas.events import now_ms, to_ms
from aios.streams.engine.failures import Backoff
from aios.streams.engine.runtime import Runtime
from aios.streams.errors import KafkaError, OrchestrationError
from aios.streams.kafka import EventProducer, make_consumer
from aios.streams.metrics import ROLE_IN_FLIGHT, ROLE_LIVE_AGENTS

STALE_INTERVALS = 3  # heartbeats a live agent may miss before it is shown as gone
GONE = frozenset({"stopped", "failed"})
log = logging.getLogger("aios.streams")


def silent_ms(status: dict[str, Any], now: int) -> int:
    return now - to_ms(status["timestamp"])


def is_stale(status: dict[str, Any], now: int) -> bool:
    """Not stopped, yet silent for more than three heartbeat intervals (killed without a word): gone."""
    return status["state"] not in GONE and silent_ms(status, now) > STALE_INTERVALS * status["heartbeat_interval_ms"]


def is_forgotten(status: dict[str, Any], now: int, forget_after_s: float) -> bool:
    """Silent for longer than AIOS_AGENT_FORGET_AFTER_S, whatever it last said: no longer listed."""
    return silent_ms(status, now) > forget_after_s * 1000


def shown_state(status: dict[str, Any], now: int) -> str:
    """What a reader shows: the state the agent last published, or ``gone`` once it is stale."""
    return "gone" if is_stale(status, now) else str(status["state"])


def is_live(status: dict[str, Any], now: int) -> bool:
    return status["state"] not in GONE and status["state"] != "draining" and not is_stale(status, now)


def roles_of(status: dict[str, Any]) -> list[str]:
    return list(status["roles"] or [status["role"]])


def live_roles_of(statuses: Iterable[dict[str, Any]], now: int | None = None) -> set[str]:
    """The roles that at least one live agent serves."""
    now = now_ms() if now is None else now
    return {r for s in statuses if is_live(s, now) for r in roles_of(s)}


def require_served(needed: Iterable[str], live: set[str]) -> None:
    """Raise when a role that work needs has no live agent: the work would wait in silence."""
    missing = sorted(set(needed) - live)
    if missing:
        names = ", ".join(repr(r) for r in missing)
        served = ", ".join(sorted(live)) or "no role (no agent is running)"
        raise OrchestrationError(
            f"no live agent serves {names}; live agents serve: {served}. Start one with "
            f"`aios worker agents --role {missing[0]}`, or run `aios up`, which serves every role")


class AgentRegistry(faust.Service):
    """Follows the agents topic in a thread of its own; ``live_roles()`` is None until caught up.

    It also tombstones agents silent for longer than AIOS_AGENT_FORGET_AFTER_S, so compaction
    drops them from the topic.
    """

    def __init__(self, rt: Runtime, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rt = rt
        self.latest: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._caught_up = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    def live_roles(self, now: int | None = None) -> set[str] | None:
        if not self._caught_up:
            return None  # unknown yet: better no note than a false "no live agent"
        with self._lock:
            return live_roles_of(self.latest.values(), now)

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

    async def on_start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._follow, name="aios-agent-registry", daemon=True)
        self._thread.start()

    async def on_stop(self) -> None:
        # The thread checks the event at least every half second; it must end before the loop
        # closes, or asyncio.run would wait for it (issue 16 §4).
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10)
            if self._thread.is_alive():
                log.warning("agent registry: its thread did not stop within 10 s")
            self._thread = None

    @faust.Service.task
    async def _watch(self) -> None:
        """Surface the thread's failure in the event loop (a crashed service stops its process)."""
        while not self.should_stop:
            if self._failure is not None:
                raise KafkaError(f"agent registry stopped: {self._failure}") from self._failure
            await self.sleep(0.5)

    def _follow(self) -> None:
        try:
            self._follow_blocking()
        except BaseException as exc:  # reported by _watch in the event loop
            self._failure = exc

    def _follow_blocking(self) -> None:
        s, topic = self.rt.settings, self.rt.topics.agents
        consumer = make_consumer(s, group=f"{s.kafka.topic_prefix}-agent-registry", **{"enable.partition.eof": True})
        tombstones = EventProducer(s, codec=self.rt.codec)
        try:
            deadline = time.monotonic() + 30
            while not self._stop.is_set():  # a topic created a moment ago may not be in the metadata yet
                meta = consumer.list_topics(topic, timeout=5).topics.get(topic)
                if meta is not None and meta.error is None and meta.partitions:
                    break
                if time.monotonic() > deadline:
                    raise KafkaError(f"topic {topic!r} does not exist; create the topics with `aios topics create`")
                self._stop.wait(0.5)
            else:
                return
            consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
            at_end: set[int] = set()
            while not self._stop.is_set():
                for msg in consumer.consume(500, 0.5):
                    err = msg.error()
                    if err is not None:
                        if err.code() == err._PARTITION_EOF:
                            at_end.add(int(msg.partition() or 0))
                            self._caught_up = self._caught_up or at_end >= set(meta.partitions)
                        continue
                    self._apply(msg.key(), msg.value())
                self._export()
                if self._caught_up:
                    self._forget(tombstones)
        finally:
            consumer.close()
            with suppress(KafkaError):  # best effort: a forgotten agent is tombstoned again next start
                tombstones.flush(5)

    def _forget(self, producer: EventProducer) -> None:
        now = now_ms()
        forget_after = self.rt.settings.processing.agent_forget_after_s
        with self._lock:
            forgotten = [a for a, s in self.latest.items() if is_forgotten(s, now, forget_after)]
            for agent_id in forgotten:
                del self.latest[agent_id]
        for agent_id in forgotten:
            log.info("agent registry: %s silent for over %.0f s; tombstoned", agent_id, forget_after)
            producer.send_tombstone(self.rt.topics.agents, agent_id)

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        if value is None:  # a tombstone: the agent stopped cleanly, or was forgotten
            with self._lock:
                self.latest.pop((key or b"").decode(errors="replace"), None)
            return
        backoff = Backoff()
        while True:
            try:
                status = self.rt.codec.decode(value, expect="AgentStatus").value
                break
            except SchemaError as exc:
                log.warning("agent registry: skipped an undecodable status: %s", exc)
                return
            except UnavailableError as exc:  # the registry: not the status's fault, so wait for it
                if self._stop.is_set():
                    return
                delay = backoff.delay()
                log.warning("agent registry: %s; trying again in %.1fs", exc, delay)
                self._stop.wait(delay)
        with self._lock:
            self.latest[status["agent_id"]] = status

    def _export(self) -> None:
        load = self.role_load()
        for role in self.rt.settings.processing.roles:
            agents, busy = load.get(role, (0, 0))
            ROLE_LIVE_AGENTS.labels(role).set(agents)
            ROLE_IN_FLIGHT.labels(role).set(busy)
