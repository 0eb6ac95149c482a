"""A topic read from its end by every worker that runs it: each partition, no consumer group, no
commits, in a thread of its own. Each worker sees every record published while it runs and nothing
from before. The control listener (cancel, drain, reload) and the ask_agent answers are two.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from abc import abstractmethod
from typing import Any

import faust
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from aios.streams.engine.records import log
from aios.streams.engine.runtime import Runtime
from aios.streams.errors import KafkaError
from aios.streams.kafka import make_consumer, watermarks

POLL_S = 0.2  # the reader thread's wake-up for the stop signal; a record wakes it at once


class TopicTail(faust.Service):
    """Reads ``topic`` from where it ends at start; :meth:`handle` gets each record, in the reader
    thread (hand work to the event loop with ``self._loop.call_soon_threadsafe``)."""

    name: str = "tail"  # each subclass names itself: its thread and its consumer's group say it

    def __init__(self, rt: Runtime, topic: str, purpose: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rt, self.topic, self.purpose = rt, topic, purpose
        self.began_at: dict[int, int] = {}  # partition -> where this worker began reading
        self.positions: dict[int, int] = {}  # partition -> the next offset the reader will see
        self.listening = threading.Event()  # set once every partition is assigned at its end
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @abstractmethod
    def handle(self, msg: Message) -> None:
        """One record (without an error) of the topic, in the reader thread."""

    async def on_start(self) -> None:
        self._loop = asyncio.get_running_loop()
        settings = self.rt.settings
        consumer = make_consumer(settings, group=f"{settings.kafka.topic_prefix}-{self.name}-{uuid.uuid4().hex}",
                                 **{"enable.auto.offset.store": False})
        try:
            await asyncio.to_thread(self._assign_at_end, consumer)
        except BaseException:
            consumer.close()
            raise
        self._thread = threading.Thread(target=self._read, args=(consumer,), name=f"aios-{self.name}", daemon=True)
        self._thread.start()

    async def on_stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5)
            self._thread = None

    def _assign_at_end(self, consumer: Consumer) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                meta = consumer.list_topics(self.topic, timeout=10).topics.get(self.topic)
            except KafkaException as exc:
                meta, problem = None, str(exc)
            else:
                problem = "" if meta is not None and meta.error is None and meta.partitions else "no partitions"
            if meta is not None and not problem:
                # Concrete end offsets, read now: OFFSET_END would be resolved at the first fetch,
                # and a record published in between (a cancel right after start) would be missed.
                ends = {p: watermarks(consumer, TopicPartition(self.topic, p))[1] for p in meta.partitions}
                consumer.assign([TopicPartition(self.topic, p, end) for p, end in ends.items()])
                self.began_at, self.positions = dict(ends), dict(ends)
                self.listening.set()
                return
            if time.monotonic() > deadline:
                raise KafkaError(f"cannot read {self.topic} for {self.purpose}: {problem}; "
                                 "create the topics with `aios topics create`")
            time.sleep(0.2)

    def _read(self, consumer: Consumer) -> None:
        try:
            while not self._stop.is_set():
                msg = consumer.poll(POLL_S)
                if msg is None:
                    continue
                if msg.error() is not None:
                    log.warning("%s: %s", self.name, msg.error())
                    continue
                self.positions[int(msg.partition() or 0)] = int(msg.offset() or 0) + 1
                self.handle(msg)
        finally:
            consumer.close()
