"""The history sink: every topic into ClickHouse, in batches, committed only after storing.

Rows are keyed by event_id (ReplacingMergeTree), so redelivery and replays converge.
A store outage blocks the sink with backoff (backpressure), it never drops a batch.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from datetime import datetime
from typing import Any

import faust

from connectors.errors import StoreUnavailableError
from connectors.history import EventRow
from schemas.codec import Decoded
from schemas.errors import SchemaError
from schemas.events import to_ms
from streams.metrics import EVENTS, PROCESSING, SINK_BATCH, SINK_RETRIES, SINK_ROWS
from streams.processors.common import dead_letter, log, raw_topic
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


Raw = tuple[bytes, str, int, int]  # value, topic, partition, offset


def build_rows(rt: Runtime, batch: list[Raw]) -> tuple[list[EventRow], list[tuple[int, SchemaError]]]:
    """Decode a batch into rows; returns the rows and the (index, error) of undecodable records."""
    rows: list[EventRow] = []
    bad: list[tuple[int, SchemaError]] = []
    for i, (value, topic, partition, offset) in enumerate(batch):
        try:
            rows.append(to_row(rt.codec.decode(value), topic, partition, offset))
        except SchemaError as exc:
            bad.append((i, exc))
    return rows, bad


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
    topics = rt.topics
    # Topics no other processor reads: the sink is their owner and dead-letters their garbage.
    owned = {topics.results, topics.messages, topics.llm_calls, topics.agents}
    settings = rt.settings

    async def sink(stream: Any) -> None:
        async for events in stream.take_events(settings.sink_batch_size, within=settings.sink_flush_s):
            started = time.perf_counter()
            batch: list[Raw] = [(e.value, e.message.topic, e.message.partition, e.message.offset) for e in events]
            # Decoding a large batch on the event loop would stall every other processor; the
            # worker thread lets the loop interleave (fastavro and chdb release the GIL often).
            rows, bad = await asyncio.to_thread(build_rows, rt, batch)
            for index, exc in bad:
                msg = events[index].message
                if msg.topic in owned:
                    await dead_letter(app, rt, msg, NAME, exc)
                EVENTS.labels(NAME, "undecodable").inc()
            await store_with_retry(rt, rows)
            SINK_ROWS.labels(rt.store.engine).inc(len(rows))
            SINK_BATCH.observe(len(rows))
            EVENTS.labels(NAME, "stored").inc(len(rows))
            PROCESSING.labels(NAME).observe(time.perf_counter() - started)

    app.agent(raw_topic(app, *topics.all()), name=NAME)(sink)
