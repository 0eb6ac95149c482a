"""The history sink: every topic into ClickHouse, in batches, committed only after storing.

Rows are keyed by event_id (ReplacingMergeTree), so redelivery and replays converge. A store
outage blocks the sink with backoff (backpressure: offsets stay uncommitted); nothing is dropped.
"""

from __future__ import annotations

import asyncio
import time

import faust
from confluent_kafka import Message

from connectors.errors import StoreUnavailableError
from connectors.history import EventRow
from schemas.codec import Decoded
from schemas.errors import SchemaError
from schemas.events import event_json, to_ms
from streams.metrics import EVENTS, SINK_BATCH, SINK_FLUSH, SINK_RETRIES, SINK_ROWS
from streams.processors.batch import BatchProcessor, retry_forever
from streams.runtime import Runtime

NAME = "history"


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
        payload=event_json(v).decode(),
    )


class HistorySink(BatchProcessor):
    name = NAME

    def __init__(self, rt: Runtime) -> None:
        s = rt.settings
        # Not the orchestrator's outbox (finals): its events reach results and project-status.
        topics = [name for name in rt.topics.all() if name != rt.topics.finals]
        super().__init__(rt, topics, batch_size=s.sink_batch_size, wait_s=s.sink_flush_s)
        t = rt.topics
        # Topics no other processor reads: the sink owns them and dead-letters their garbage.
        self.owned = {t.results, t.project_status, t.messages, t.llm_calls, t.agents}

    async def apply(self, batch: list[Message]) -> None:
        rows: list[EventRow] = []
        for i, msg in enumerate(batch):
            try:
                decoded = self.rt.codec.decode(msg.value())
                rows.append(to_row(decoded, str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0)))
            except SchemaError as exc:
                if msg.topic() in self.owned:
                    self.dead_letter(msg, exc)
                EVENTS.labels(NAME, "undecodable").inc()
            if i % 100 == 99:
                await asyncio.sleep(0)  # decoding a large batch must not starve the other processors
        started = time.perf_counter()
        await retry_forever("history store", self._insert, rows)
        SINK_FLUSH.labels(self.rt.store.engine).observe(time.perf_counter() - started)
        SINK_ROWS.labels(self.rt.store.engine).inc(len(rows))
        SINK_BATCH.observe(len(rows))
        EVENTS.labels(NAME, "stored").inc(len(rows))

    async def _insert(self, rows: list[EventRow]) -> None:
        try:
            await asyncio.to_thread(self.rt.store.insert, rows)
        except StoreUnavailableError:
            SINK_RETRIES.inc()
            raise


def register(app: faust.App, rt: Runtime) -> None:
    # Started with the faust app, or on its own when the process runs no faust agent.
    rt.services.append(HistorySink(rt))
