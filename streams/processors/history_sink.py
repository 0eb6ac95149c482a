"""The history sink: every topic into ClickHouse, in batches, committed only after storing.

The batch itself is written by connectors.history.writer (the transcoder turns most events into
ClickHouse Native blocks; Python decodes the rest).

Rows are keyed by event_id (ReplacingMergeTree), so redelivery and replays converge. A store
outage blocks the sink with backoff (backpressure: offsets stay uncommitted); nothing is dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

import faust
import orjson
from confluent_kafka import Message

from aios.connectors.errors import StoreUnavailableError
from aios.connectors.history.writer import BatchResult, Record, to_row, write_batch
from aios.schemas.errors import UndecodableError
from aios.schemas.limits import MAX_NAME_CHARS
from aios.streams.engine.batch import BatchProcessor, retry_forever
from aios.streams.engine.records import log
from aios.streams.engine.runtime import Runtime
from aios.streams.metrics import (
    EVENTS,
    SINK_BATCH,
    SINK_FLUSH,
    SINK_PYTHON,
    SINK_REFUSED,
    SINK_RETRIES,
    SINK_ROWS,
)
from aios.streams.tracing import PROCESS_HEADER, TRACEPARENT

NAME = "history"
T = TypeVar("T")
__all__ = ["HistorySink", "register", "to_row"]  # to_row: for callers that build rows themselves


class HistorySink(BatchProcessor):
    name = NAME

    def __init__(self, rt: Runtime) -> None:
        s = rt.settings
        # Not the orchestrator's outbox (finals): its events reach results and project-status.
        topics = [name for name in rt.topics.all() if name != rt.topics.finals]
        super().__init__(rt, topics, batch_size=s.processing.sink_batch_size, wait_s=s.processing.sink_flush_s)
        t = rt.topics
        # Topics no other processor reads: the sink owns them and dead-letters their garbage.
        self.owned = {t.results, t.project_status, t.messages, t.llm_calls, t.agents}
        # A null value is a tombstone on a compacted topic (an agent that stopped deletes its key);
        # on the other topics the sink owns it is a producer's mistake.
        self.no_tombstones = self.owned - {t.agents, t.project_status, t.orchestrator_state}

    async def apply(self, batch: list[Message]) -> None:
        # One pass: a tombstone is not an event (the last status it clears is already stored).
        kept: list[Message] = []
        records: list[Record] = []
        by_record: dict[int, Message] = {}
        for msg in batch:
            value = msg.value()
            if value is None:
                if msg.topic() in self.no_tombstones:
                    self.dead_letter(msg, UndecodableError(f"a record with no value on {msg.topic()}: a null value "
                                                           "is a tombstone, which only compacted topics take"))
                    EVENTS.labels(NAME, "undecodable").inc()
                continue
            record = Record(str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0), value)
            kept.append(msg)
            records.append(record)
            by_record[id(record)] = msg
        if not records:
            return
        started = time.perf_counter()
        # Off the event loop: transcoding, and the Python decoding of what the transcoder leaves,
        # must not starve the other processors.
        result: BatchResult = await retry_forever("history store", self._write, write_batch, self.rt.store,
                                                  self.rt.codec, records)
        hops = hop_lines(kept)
        if hops:
            await retry_forever("history store", self._write, self.rt.store.insert_hops, hops)
        SINK_FLUSH.labels(self.rt.store.engine).observe(time.perf_counter() - started)
        if result.refused is not None:
            # Slow (Python decodes the whole batch) but nothing is lost. The transcoder checked every
            # body, so a steady stream of these means the store objects: a changed table or setting.
            SINK_REFUSED.inc()
            log.warning("history: ClickHouse refused a batch of %d events, decoded in Python instead "
                        "(%d rejected): %s", len(records), len(result.rejected), result.refused[:500])
        for record, exc in result.rejected:
            if record.topic in self.owned:
                self.dead_letter(by_record[id(record)], exc)
            EVENTS.labels(NAME, "undecodable").inc()
        # Steadily high: the transcoder is missing (see the log at start), or producers write an
        # older schema version or bodies the transcoder does not take.
        SINK_PYTHON.inc(result.stored - result.native + len(result.rejected))
        SINK_ROWS.labels(self.rt.store.engine).inc(result.stored)
        SINK_BATCH.observe(result.stored)
        EVENTS.labels(NAME, "stored").inc(result.stored)

    async def _write(self, call: Callable[..., T], *args: Any) -> T:
        """One write to the store, off the event loop; an outage counts in aios_sink_store_retries_total
        (the batch's events and its hops alike: either one holds the sink back)."""
        try:
            return await asyncio.to_thread(call, *args)
        except StoreUnavailableError:
            SINK_RETRIES.inc()
            raise


def hop_lines(batch: list[Message]) -> list[str]:
    """JSON rows of ``hops`` for the records that say who produced them (``aios-process``)."""
    lines = []
    for msg in batch:
        headers = msg.headers()
        if not headers:
            continue
        producer = parent = None
        for key, value in headers.items() if isinstance(headers, dict) else headers:
            if key == PROCESS_HEADER:
                producer = value
            elif key == TRACEPARENT:
                parent = value
        if producer is None:
            continue
        _, ms = msg.timestamp()
        lines.append(orjson.dumps({
            "topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset(), "ts": max(ms, 0) / 1000,
            "producer": _text(producer)[:MAX_NAME_CHARS], "traceparent": _text(parent)[:64]}).decode())
    return lines


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def register(app: faust.App, rt: Runtime) -> None:
    # Started with the faust app, or on its own when the process runs no faust agent.
    rt.services.append(HistorySink(rt))
