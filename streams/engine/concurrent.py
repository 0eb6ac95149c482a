"""Concurrent processors: many slow records in flight at once, in one event loop.

An LLM call takes seconds and the platform's own work per record milliseconds, so a processor that
handles records one after the other (or a handful at a time) leaves the model idle. This runtime
model keeps up to ``max_in_flight`` records of its partitions in flight, in any order, following
Confluent's Parallel Consumer:

- a partition's offset is committed only below its lowest unfinished record (``offsets.py``), and
  a record counts as finished only once every output it produced is acknowledged by the broker, so
  a crash redelivers what was not finished and skips nothing;
- when the window is full the consumer pauses fetching (backpressure: memory stays bounded) and
  resumes when a slot frees;
- a handler failure that is not the record's fault (a store outage, a send error) is retried with
  backoff, the record held in flight and uncommitted meanwhile; any other failure goes to
  ``on_error`` (by default, the dead-letter queue) and the offset moves on;
- on a rebalance, the revoked partitions' finished prefix is committed and their windows dropped;
  records of theirs still running finish, but are not committed here (their next owner has them);
- ``drain`` stops fetching, waits for what is in flight, and commits; records that did not finish
  are left uncommitted for the partition's next owner.

The consumer is polled from the event loop (``consume(n, 0)``), so rebalance callbacks and
delivery callbacks run on the loop's thread, beside the handlers: no locks.
"""

from __future__ import annotations

import asyncio
import functools
import time
from abc import abstractmethod
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import faust
from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from aios.connectors.errors import StoreUnavailableError
from aios.schemas.errors import AiosError
from aios.streams.engine.failures import Verdict, verdict_for
from aios.streams.engine.offsets import OffsetWindow
from aios.streams.engine.records import dead_letter_event, log
from aios.streams.engine.runtime import Runtime
from aios.streams.errors import KafkaError
from aios.streams.kafka import make_consumer, producer_config
from aios.streams.metrics import (
    CONCURRENT_IN_FLIGHT,
    CONCURRENT_PAUSES,
    CONCURRENT_RETRIES,
    EVENTS,
    RECORD_FAILURES,
)
from aios.streams.tracing import Headers, headers_for

# Failures of a store or of Kafka, not of the record: the record stays in flight and is run again.
RETRYABLE = (StoreUnavailableError, KafkaError)
IDLE_S = 0.002  # how long the loop sleeps when there was nothing to consume
MAX_BATCH = 500  # records taken from the consumer per poll at most


class Unstarted(AiosError):  # noqa: N818 - a signal, not a failure
    """Raised by a handler that will not start its record (the worker is draining): the record is
    left unfinished and uncommitted, for the partition's next owner."""


@dataclass(eq=False)
class Work:
    """One record in flight: its window, and the outputs it produced that are not yet acknowledged."""

    msg: Message
    key: tuple[str, int]
    offset: int
    window: OffsetWindow
    pending: int = 0
    handled: bool = False
    failed: str | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)


_current: ContextVar[Work | None] = ContextVar("aios_concurrent_work", default=None)


class ConcurrentProcessor(faust.Service):
    """Reads ``topics`` as group ``<prefix>-<name>`` and runs ``handle`` on up to ``max_in_flight``
    records at once."""

    name: str = "concurrent"

    def __init__(self, rt: Runtime, topics: list[str], *, max_in_flight: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rt = rt
        self.topics = topics
        self.max_in_flight = max_in_flight
        self.consumer: Consumer | None = None
        self.producer: Producer | None = None
        self.windows: dict[tuple[str, int], OffsetWindow] = {}
        self.works: set[Work] = set()
        self.draining = False
        self.paused = False
        self._assigned = False
        self._commit_interval_s = rt.settings.processing.commit_interval_s

    # --- what a processor implements -------------------------------------------------------

    @abstractmethod
    async def handle(self, msg: Message) -> None:
        """Process one record, producing its outputs with :meth:`produce`. Raise ``Unstarted`` to
        leave it for another worker, a ``RETRYABLE`` error to run it again after a pause."""

    async def on_error(self, msg: Message, exc: Exception) -> None:
        """The record failed for a reason of its own (or a bug): dead-letter it; the stream goes on."""
        letter = dead_letter_event(str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0),
                                   msg.key(), msg.value(), self.name, exc)
        self.produce(self.rt.topics.dlq, self.rt.codec.encode("DeadLetter", letter, self.rt.topics.dlq),
                     msg.key() or str(msg.topic()).encode(), headers=headers_for(letter))
        EVENTS.labels(self.name, "dead_letter").inc()

    # --- outputs ---------------------------------------------------------------------------

    def produce(self, topic: str, value: bytes | None, key: bytes | str | None, *, tracked: bool = True,
                headers: Headers | None = None) -> None:
        """Send an output. Inside a handler it counts towards its record: the record's offset is
        committed only once the broker acknowledged it. ``tracked=False`` is for outputs that may
        be lost (live tokens, heartbeats); ``headers`` carry an event's traceparent (``headers_for``)."""
        producer = self.producer
        if producer is None:
            raise KafkaError(f"{self.name} is not started")
        work = _current.get() if tracked else None
        callback = functools.partial(self._delivered, work) if work is not None else None
        while True:
            try:
                producer.produce(topic, value=value, key=key, headers=headers, on_delivery=callback)
                break
            except BufferError:
                producer.poll(0.05)  # the local queue is full: let deliveries make room
            except KafkaException as exc:
                raise KafkaError(f"{self.name}: cannot send to {topic}: {exc.args[0]}") from exc
        if work is not None:
            work.pending += 1

    async def produce_acked(self, topic: str, value: bytes, key: bytes | str | None) -> None:
        """Send an output and return once the broker acknowledged it (a step that must not go on
        before its output is durable: an ask_agent question is journaled only once it was asked).
        Raises ``KafkaError`` when it was not delivered, which runs the record again."""
        producer = self.producer
        if producer is None:
            raise KafkaError(f"{self.name} is not started")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def delivered(err: Any, _msg: Message) -> None:  # on the loop's thread: the loop polls the producer
            if done.done():
                return
            if err is None:
                done.set_result(None)
            else:
                done.set_exception(KafkaError(f"{self.name}: {topic} did not take a record: {err}"))

        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
            except KafkaException as exc:
                raise KafkaError(f"{self.name}: cannot send to {topic}: {exc.args[0]}") from exc
        while not done.done():
            producer.poll(0)  # the loop polls too; while draining, it does not
            await asyncio.wait([done], timeout=0.01)
        done.result()

    def _delivered(self, work: Work, err: Any, _msg: Message) -> None:
        work.pending -= 1
        if err is not None:
            work.failed = str(err)
        self._settle(work)

    # --- the loop --------------------------------------------------------------------------

    async def on_start(self) -> None:
        s = self.rt.settings
        self.producer = Producer(producer_config(s, **{"linger.ms": 5}))
        self.consumer = make_consumer(
            s, group=f"{s.kafka.topic_prefix}-{self.name}",
            # Fetched but not yet taken records are bounded too: the window, not librdkafka's
            # prefetch (100,000 records per partition by default), decides what is held.
            **{"queued.min.messages": min(10_000, 4 * self.max_in_flight),
               "queued.max.messages.kbytes": 16_384})
        self.consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)

    async def on_stop(self) -> None:
        for work in list(self.works):
            if work.task is not None:
                work.task.cancel()
        if self.producer is not None:
            await asyncio.to_thread(self.producer.flush, 10)
        if self.consumer is not None:
            consumer, self.consumer = self.consumer, None
            await asyncio.to_thread(consumer.close)

    async def wait_assigned(self, timeout_s: float) -> None:
        """Until the group has given this member its partitions."""
        deadline = time.monotonic() + timeout_s
        while not self._assigned:
            if time.monotonic() > deadline:
                raise KafkaError(f"{self.name}: no partitions assigned within {timeout_s:.0f}s; is Kafka up and "
                                 "are the topics created (aios topics create)?")
            await asyncio.sleep(0.05)

    @faust.Service.task
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_commit = loop.time() + self._commit_interval_s
        while not self.should_stop and not self.draining:
            consumer, producer = self.consumer, self.producer
            if consumer is None or producer is None:
                raise KafkaError(f"{self.name} started without its clients")
            producer.poll(0)  # delivery callbacks: they finish records
            free = self.max_in_flight - len(self.works)
            self._backpressure(consumer, free)
            # Paused, this still serves rebalances and keeps the member alive.
            msgs = consumer.consume(max(0, min(free, MAX_BATCH)), 0) if free > 0 else consumer.consume(1, 0)
            for msg in msgs:
                self._take(msg)
            if loop.time() >= next_commit:
                self.commit()
                next_commit = loop.time() + self._commit_interval_s
            await asyncio.sleep(0 if msgs else IDLE_S)

    def _backpressure(self, consumer: Consumer, free: int) -> None:
        if free <= 0 and not self.paused:
            consumer.pause(consumer.assignment())
            self.paused = True
            CONCURRENT_PAUSES.labels(self.name).inc()
        elif free > 0 and self.paused:
            consumer.resume(consumer.assignment())
            self.paused = False

    def _take(self, msg: Message) -> None:
        if msg.error() is not None:
            log.warning("%s: consume error: %s", self.name, msg.error())
            return
        key = (str(msg.topic()), int(msg.partition() or 0))
        window = self.windows.get(key)
        offset = int(msg.offset() or 0)
        if window is None or not window.start(offset):
            return  # a partition no longer ours, or a record already in flight or done
        work = Work(msg, key, offset, window)
        self.works.add(work)
        CONCURRENT_IN_FLIGHT.labels(self.name).set(len(self.works))
        work.task = asyncio.create_task(self._process(work), name=f"{self.name}:{key[0]}:{key[1]}@{offset}")

    async def _process(self, work: Work) -> None:
        _current.set(work)
        backoff = 0.2
        while True:
            try:
                await self.handle(work.msg)
            except Unstarted:
                self._release(work)  # unfinished in its window: never committed here
                return
            except Exception as exc:  # noqa: BLE001 - decided below: retried, or the record's fault
                if isinstance(exc, RETRYABLE):  # an undelivered output is retried here, not fatal
                    RECORD_FAILURES.labels(self.name, Verdict.RETRY.value, type(exc).__name__).inc()
                elif verdict_for(self.name, exc) is not Verdict.RETRY:
                    await self._give_up(work, exc)  # the record's fault (or a bug): dead-letter it
                    break
                CONCURRENT_RETRIES.labels(self.name, type(exc).__name__).inc()
                log.warning("%s: %s@%s/%s will be run again in %.1fs: %s", self.name, work.key[0], work.key[1],
                            work.offset, backoff, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            break
        work.handled = True
        self._settle(work)

    async def _give_up(self, work: Work, exc: Exception) -> None:
        log.exception("%s: %s@%s/%s failed", self.name, work.key[0], work.key[1], work.offset, exc_info=exc)
        while True:
            try:
                await self.on_error(work.msg, exc)
                return
            except RETRYABLE as again:
                log.warning("%s: cannot record the failure yet: %s", self.name, again)
                await asyncio.sleep(1.0)

    def _settle(self, work: Work) -> None:
        """Finish ``work`` once it was handled and all its outputs are acknowledged; run it again
        when one of them could not be delivered (its outputs are idempotent by event id)."""
        if not work.handled or work.pending > 0:
            return
        if work.failed is not None:
            log.warning("%s: an output of %s@%s/%s was not delivered (%s); running it again", self.name,
                        work.key[0], work.key[1], work.offset, work.failed)
            CONCURRENT_RETRIES.labels(self.name, "delivery").inc()
            work.failed, work.handled = None, False
            if self.windows.get(work.key) is work.window:
                work.task = asyncio.create_task(self._process(work))
                return
        work.window.finish(work.offset)
        self._release(work)

    def _release(self, work: Work) -> None:
        self.works.discard(work)
        CONCURRENT_IN_FLIGHT.labels(self.name).set(len(self.works))

    # --- offsets and rebalances ------------------------------------------------------------

    def commit(self, *, wait: bool = False) -> None:
        """Commit, for each partition, the position below its lowest unfinished record."""
        consumer = self.consumer
        if consumer is None:
            return
        offsets = [TopicPartition(topic, partition, position)
                   for (topic, partition), window in self.windows.items()
                   if (position := window.to_commit()) is not None]
        if not offsets:
            return
        try:
            if wait:
                consumer.commit(offsets=offsets, asynchronous=False)
            else:
                consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:
            # A rebalance took the partitions: their next owner redoes the uncommitted records.
            log.warning("%s: commit failed (%s)", self.name, exc)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.windows[(tp.topic, tp.partition)] = OffsetWindow()
        if self.paused or self.draining:
            self.paused = False  # _backpressure pauses the whole new assignment on the next turn
        if partitions:
            self._assigned = True

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        offsets = []
        for tp in partitions:
            window = self.windows.pop((tp.topic, tp.partition), None)
            position = window.to_commit() if window is not None else None
            if position is not None:
                offsets.append(TopicPartition(tp.topic, tp.partition, position))
        if offsets:
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                log.warning("%s: commit on revocation failed (%s)", self.name, exc)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.windows.pop((tp.topic, tp.partition), None)  # no commit: they belong to another now

    # --- stopping --------------------------------------------------------------------------

    async def drain(self, timeout_s: float) -> list[Work]:
        """Stop fetching, wait up to ``timeout_s`` for the records in flight, commit what finished.
        Returns the records that did not finish (cancelled, left for the next owner)."""
        self.draining = True
        consumer, producer = self.consumer, self.producer
        if consumer is not None and not self.paused:
            consumer.pause(consumer.assignment())
            self.paused = True
        deadline = time.monotonic() + timeout_s
        while self.works and time.monotonic() < deadline:
            if producer is not None:
                producer.poll(0)
            await asyncio.sleep(0.01)
        left = list(self.works)
        for work in left:
            if work.task is not None:
                work.task.cancel()
        if producer is not None:
            remaining = await asyncio.to_thread(producer.flush, 10)
            if remaining:
                log.warning("%s: %d outputs unacknowledged after draining", self.name, remaining)
            producer.poll(0)
        self.commit(wait=True)
        return left
