"""Broadcasts on the control topic, heard by every worker that listens.

The orchestrator consumes ``<prefix>.control`` in its group, one owner per project. Workers that
must also act on a control event (an agent working on a task that is cancelled) read every
partition of it directly, from its end, with no consumer group and no commits: each of them sees
every event published while it runs, and nothing from before it started. Handlers register per
action (``cancel``; the ``drain`` and ``reload`` broadcasts of ``streams/processors/agent_control.py``)
and run on the event loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import faust
from confluent_kafka import Consumer, KafkaException, TopicPartition

from aios.schemas.errors import SchemaError
from aios.streams.engine.records import log
from aios.streams.engine.runtime import Runtime
from aios.streams.errors import KafkaError
from aios.streams.kafka import make_consumer, watermarks

ControlHandler = Callable[[dict[str, Any]], None]
POLL_S = 0.2  # the reader thread's wake-up for the stop signal; an event wakes it at once


class ControlListener(faust.Service):
    """Reads the control topic from its end on every partition, and hands each event to the
    handlers of its action."""

    name = "control-listener"

    def __init__(self, rt: Runtime, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rt = rt
        self.handlers: dict[str, list[ControlHandler]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.listening = threading.Event()  # set once every partition is assigned at its end

    def on(self, action: str, handler: ControlHandler) -> None:
        """Call ``handler(event)`` for each control event with ``action`` (on the event loop)."""
        self.handlers.setdefault(action, []).append(handler)

    async def on_start(self) -> None:
        self._loop = asyncio.get_running_loop()
        consumer = make_consumer(self.rt.settings, group=f"{self.rt.settings.kafka.topic_prefix}-listener-{uuid.uuid4().hex}",
                                 **{"fetch.wait.max.ms": 50, "enable.auto.offset.store": False})
        try:
            await asyncio.to_thread(self._assign_at_end, consumer)
        except BaseException:
            consumer.close()
            raise
        self._thread = threading.Thread(target=self._read, args=(consumer,), name="aios-control", daemon=True)
        self._thread.start()

    async def on_stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5)
            self._thread = None

    def _assign_at_end(self, consumer: Consumer) -> None:
        topic = self.rt.topics.control
        deadline = time.monotonic() + 30
        while True:
            try:
                meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
            except KafkaException as exc:
                meta, problem = None, str(exc)
            else:
                problem = "" if meta is not None and meta.error is None and meta.partitions else "no partitions"
            if meta is not None and not problem:
                # Concrete end offsets, read now: OFFSET_END would be resolved at the first fetch,
                # and an event published in between (a cancel right after start) would be missed.
                ends = [TopicPartition(topic, p, watermarks(consumer, TopicPartition(topic, p))[1])
                        for p in meta.partitions]
                consumer.assign(ends)
                self.listening.set()
                return
            if time.monotonic() > deadline:
                raise KafkaError(f"cannot listen to {topic}: {problem}; create the topics with `aios topics create`")
            time.sleep(0.2)

    def _read(self, consumer: Consumer) -> None:
        try:
            while not self._stop.is_set():
                msg = consumer.poll(POLL_S)
                if msg is None:
                    continue
                if msg.error() is not None:
                    log.warning("control listener: %s", msg.error())
                    continue
                try:
                    event = self.rt.codec.decode(msg.value(), expect="Control").value
                except SchemaError:
                    continue  # the orchestrator owns this topic and dead-letters what it cannot read
                if self._loop is not None and event.get("action") in self.handlers:
                    self._loop.call_soon_threadsafe(self._dispatch, event)
        finally:
            consumer.close()

    def _dispatch(self, event: dict[str, Any]) -> None:
        for handler in self.handlers.get(str(event["action"]), ()):
            try:
                handler(event)
            except Exception:  # a handler's bug must not stop the others, nor the listener
                log.exception("control listener: the %s handler failed", event["action"])
