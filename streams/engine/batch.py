"""Runtime model 2 of 3, the batch consumer: processors that apply events in batches rather than
one at a time. Use it for many small records applied together to a store whose writes are
idempotent (the history sink, the memory processor, the JSON egress).

They run on confluent-kafka's C consumer as services beside (or without) the faust app: faust
spends ~0.2 ms of Python per consumed event, more than the batch work itself. Offsets are
committed only after a batch has been applied, so a crash re-applies it; the handlers are
idempotent (ClickHouse rows by event_id, Redis turns by memory_id).

A batch that fails is handled as ``failures.decide`` says: an unreachable server is waited out and
the batch applied again; any other failure has the batch applied again one record at a time, so
the records at fault are dead-lettered and the others still applied.
"""

from __future__ import annotations

import asyncio
import time
from abc import abstractmethod
from typing import Any

import faust
from confluent_kafka import Consumer, KafkaException, Message

from aios.schemas.errors import UnavailableError
from aios.streams.engine.failures import Backoff, Verdict, verdict_for
from aios.streams.engine.records import dead_letter_event, log
from aios.streams.engine.runtime import Runtime
from aios.streams.errors import KafkaError
from aios.streams.kafka import EventProducer, make_consumer
from aios.streams.logs import set_processor
from aios.streams.metrics import EVENTS, PROCESSING


class BatchProcessor(faust.Service):
    """Consume ``topics`` as group ``<prefix>-<name>``; ``apply`` each batch, then commit."""

    name: str = "batch"

    def __init__(self, rt: Runtime, topics: list[str], *, batch_size: int, wait_s: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rt = rt
        self.topics = topics
        self.batch_size = batch_size
        self.wait_s = wait_s
        self.consumer: Consumer | None = None
        self.dlq = EventProducer(rt.settings, codec=rt.codec)
        self._dead_letters = 0
        self._lettered: set[tuple[str, int, int]] = set()  # this batch's dead letters (applied again)

    @abstractmethod
    async def apply(self, batch: list[Message]) -> None:
        """Apply a batch; return only once its effects are durable.

        Dead-letter the records that do not decode or break the limits (``self.dead_letter``) and
        apply the rest. Whatever else it raises is decided in ``failures``: see the module doc."""

    async def on_start(self) -> None:
        s = self.rt.settings
        self.consumer = make_consumer(s, group=f"{s.kafka.topic_prefix}-{self.name}")
        self.consumer.subscribe(self.topics)

    async def on_stop(self) -> None:
        if self.consumer is not None:
            await asyncio.to_thread(self.consumer.close)

    def dead_letter(self, msg: Message, exc: Exception) -> None:
        """Queue a DeadLetter for ``msg``; it is flushed before the batch's offsets commit."""
        where = (str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0))
        if where in self._lettered:
            return  # already lettered by an earlier try of the same batch
        self._lettered.add(where)
        letter = dead_letter_event(str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0),
                                   msg.key(), msg.value(), self.name, exc)
        self.dlq.send(self.rt.topics.dlq, "DeadLetter", letter, key=str(msg.topic()))
        EVENTS.labels(self.name, "dead_letter").inc()
        self._dead_letters += 1

    @faust.Service.task
    async def _run(self) -> None:
        consumer = self.consumer
        if consumer is None:
            raise KafkaError(f"{self.name} started without a consumer")
        set_processor(self.name)
        while not self.should_stop:
            batch = await asyncio.to_thread(consumer.consume, self.batch_size, self.wait_s)
            batch = [m for m in batch if not self._is_error(m)]
            if not batch:
                continue
            started = time.perf_counter()
            self._lettered.clear()
            await self.apply_guarded(batch)
            if self._dead_letters:
                await asyncio.to_thread(self.dlq.flush)  # dead letters are durable before we commit
                self._dead_letters = 0
            try:
                await asyncio.to_thread(consumer.commit, asynchronous=False)
            except KafkaException as exc:
                # A rebalance took the partitions: the next owner re-applies the batch (idempotent).
                log.warning("%s: commit failed (%s); the batch will be redelivered", self.name, exc)
            PROCESSING.labels(self.name).observe(time.perf_counter() - started)

    async def apply_guarded(self, batch: list[Message]) -> None:
        """``apply`` the batch; when it fails for a record's sake, one record at a time."""
        if await self._apply_until_decided(batch) is None:
            return
        for msg in batch:
            failure = await self._apply_until_decided([msg])
            if failure is not None:
                self.dead_letter(msg, failure)

    async def _apply_until_decided(self, records: list[Message]) -> Exception | None:
        """Apply ``records``, waiting out unreachable servers. None once applied; the exception
        when the records are at fault; fatal failures are raised."""
        backoff = Backoff()
        while True:
            try:
                await self.apply(records)
                return None
            except Exception as exc:
                verdict = verdict_for(self.name, exc)
                if verdict is Verdict.FATAL:
                    raise
                if verdict is Verdict.DEAD_LETTER:
                    return exc
                await backoff.wait(self.name, exc)

    def _is_error(self, msg: Message) -> bool:
        err = msg.error()
        if err is None:
            return False
        log.warning("%s: consume error: %s", self.name, err)
        return True


async def retry_forever(what: str, call: Any, *args: Any, base_s: float = 0.2, max_s: float = 30.0) -> Any:
    """Await ``call(*args)`` until it stops raising UnavailableError (backpressure, no loss)."""
    backoff = base_s
    while True:
        try:
            return await call(*args)
        except UnavailableError as exc:
            log.warning("%s: %s; retrying in %.1fs", what, exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max_s)
