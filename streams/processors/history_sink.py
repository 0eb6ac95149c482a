"""The history sink: every topic into ClickHouse, in batches, committed only after storing.

It is a batch consumer, so it runs as a service inside the faust app on confluent-kafka's C
consumer rather than faust's per-event dispatch: the sink reads every topic (about six events
per task), and per-event Python dispatch cost more than the rest of the pipeline together.
Rows are keyed by event_id (ReplacingMergeTree), so redelivery and replays converge. A store
outage blocks the sink with backoff (backpressure: offsets stay uncommitted); it never drops a batch.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from datetime import datetime
from typing import Any

import faust
from confluent_kafka import Consumer, KafkaException, Message

from connectors.errors import StoreUnavailableError
from connectors.history import EventRow
from schemas.codec import Decoded
from schemas.errors import SchemaError
from schemas.events import to_ms
from streams.errors import KafkaError
from streams.kafka import EventProducer, make_consumer
from streams.metrics import EVENTS, PROCESSING, SINK_BATCH, SINK_RETRIES, SINK_ROWS
from streams.processors.common import dead_letter_event, log
from streams.runtime import Runtime

NAME = "history"


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return to_ms(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(f"cannot store {type(value).__name__}")


def to_row(decoded: Decoded, topic: str, partition: int, offset: int) -> EventRow:
    v = decoded.value
    status = v.get("status") or v.get("state") or v.get("outcome") or ""
    return EventRow(
        event_id=v["event_id"],
        event_type=decoded.name.rsplit(".", 1)[-1],
        topic=topic,
        partition=partition,
        offset=offset,
        ts=to_ms(v["timestamp"]),
        trace_id=v["trace_id"],
        task_id=v.get("task_id") or "",
        project_id=v.get("project_id") or "",
        role=v.get("role") or "",
        status=str(status),
        payload=json.dumps(v, default=_jsonable, separators=(",", ":")),
    )


def build_rows(rt: Runtime, batch: list[Message]) -> tuple[list[EventRow], list[tuple[Message, SchemaError]]]:
    """Decode a batch into rows; also returns the undecodable messages with their errors."""
    rows: list[EventRow] = []
    bad: list[tuple[Message, SchemaError]] = []
    for msg in batch:
        try:
            decoded = rt.codec.decode(msg.value())
            rows.append(to_row(decoded, str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0)))
        except SchemaError as exc:
            bad.append((msg, exc))
    return rows, bad


async def build_rows_cooperatively(
    rt: Runtime, batch: list[Message], chunk: int = 100
) -> tuple[list[EventRow], list[tuple[Message, SchemaError]]]:
    """Decode on the event loop in small chunks. A worker thread would contend for the GIL
    with the loop (each socket send hands it over), which slowed every other processor."""
    rows: list[EventRow] = []
    bad: list[tuple[Message, SchemaError]] = []
    for i in range(0, len(batch), chunk):
        part_rows, part_bad = build_rows(rt, batch[i : i + chunk])
        rows += part_rows
        bad += part_bad
        await asyncio.sleep(0)
    return rows, bad


class HistorySink(faust.Service):
    """Consume every topic in batches, store them, then commit.

    Independent of faust's consumer and producer, so `aios worker history` needs no faust agent.
    """

    def __init__(self, rt: Runtime, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rt = rt
        self.consumer: Consumer | None = None
        self.dlq = EventProducer(rt.settings, codec=rt.codec)
        # Topics no other processor reads: the sink owns them and dead-letters their garbage.
        t = rt.topics
        self.owned = {t.results, t.messages, t.llm_calls, t.agents}

    async def on_start(self) -> None:
        s = self.rt.settings
        self.consumer = make_consumer(s, group=f"{s.topic_prefix}-{NAME}", **{"fetch.wait.max.ms": 100})
        self.consumer.subscribe(self.rt.topics.all())

    async def on_stop(self) -> None:
        if self.consumer is not None:
            await asyncio.to_thread(self.consumer.close)  # leaves the group; offsets were committed per batch

    @faust.Service.task
    async def _run(self) -> None:
        s = self.rt.settings
        consumer = self.consumer
        if consumer is None:
            raise KafkaError("history sink started without a consumer")
        while not self.should_stop:
            batch = await asyncio.to_thread(consumer.consume, s.sink_batch_size, s.sink_flush_s)
            if self.should_stop and not batch:
                return
            started = time.perf_counter()
            batch = [m for m in batch if not self._is_error(m)]
            if not batch:
                continue
            rows, bad = await build_rows_cooperatively(self.rt, batch)
            for msg, exc in bad:
                if msg.topic() in self.owned:
                    letter = dead_letter_event(str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0),
                                               msg.key(), msg.value(), NAME, exc)
                    self.dlq.send(self.rt.topics.dlq, "DeadLetter", letter, key=str(msg.topic()))
                EVENTS.labels(NAME, "undecodable").inc()
            await store_with_retry(self.rt, rows)
            if bad:
                await asyncio.to_thread(self.dlq.flush)  # the dead letters are durable before we commit
            try:
                await asyncio.to_thread(consumer.commit, asynchronous=False)
            except KafkaException as exc:
                # A rebalance took the partitions: the next owner re-stores the batch (idempotent).
                log.warning("history sink commit failed (%s); batch will be redelivered", exc)
            SINK_ROWS.labels(self.rt.store.engine).inc(len(rows))
            SINK_BATCH.observe(len(rows))
            EVENTS.labels(NAME, "stored").inc(len(rows))
            PROCESSING.labels(NAME).observe(time.perf_counter() - started)

    @staticmethod
    def _is_error(msg: Message) -> bool:
        err = msg.error()
        if err is None:
            return False
        log.warning("history sink consume error: %s", err)
        return True


async def store_with_retry(rt: Runtime, rows: list[EventRow], max_backoff_s: float = 30.0) -> None:
    backoff = 0.2
    while True:
        try:
            await asyncio.to_thread(rt.store.insert, rows)
            return
        except StoreUnavailableError as exc:
            SINK_RETRIES.inc()
            log.warning("history store unavailable (%s); retrying %d rows in %.1fs", exc, len(rows), backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max_backoff_s)


def register(app: faust.App, rt: Runtime) -> None:
    # Started with the faust app, or on its own when the process runs no faust agent.
    rt.services.append(HistorySink(rt))
