"""The JSON bridges for Kafka Connect: plain-JSON tasks in, results out as plain JSON.

``json-ingress`` reads ``<prefix>.tasks-json`` (one JSON object per record: FileStreamSource,
kcat, any producer), validates each record against the limits every entry point shares and
produces it as an Avro Task on ``<prefix>.tasks``; an invalid record goes to the DLQ with the
reason. ``json-egress`` republishes every terminal TaskResult from ``<prefix>.results`` as one line
of JSON on ``<prefix>.results-json``, for Connect sinks that read JSON (FileStreamSink, the
ClickHouse and HTTP sinks); a result that breaks the limits, or whose JSON would not fit in a
message, is dead-lettered instead.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial
from typing import Any

import faust
from confluent_kafka import Message

from aios.schemas.checks import check_result
from aios.schemas.errors import RecordTooLargeError, SchemaError, UndecodableError
from aios.schemas.json_task import SubmitterNotAllowedError, check_submitter, result_to_json, task_from_json
from aios.schemas.limits import message_size
from aios.streams.engine.batch import BatchProcessor
from aios.streams.engine.records import guarded, raw_topic
from aios.streams.engine.runtime import Runtime
from aios.streams.kafka import EventProducer, make_codec
from aios.streams.metrics import EVENTS, PROCESSING
from aios.streams.tracing import HeadersIn, faust_headers_for, parent_from, passed_on, span

INGRESS = "json-ingress"
EGRESS = "json-egress"


def register_ingress(app: faust.App, rt: Runtime) -> None:
    # Records from outside are checked against the Task schema before they are produced.
    codec = make_codec(rt.settings, validate=True)

    async def convert(msg: Any) -> None:
        task = task_from_json(msg.value, roles=rt.settings.processing.roles,
                              source=f"{msg.topic}/{msg.partition}/{msg.offset}")
        check_submitter(task, rt.settings.processing.ingress_submitters)
        # A restricted description is sealed before it reaches aios.tasks (AIOS_ENCRYPTION_KEY).
        data = codec.encode("Task", rt.sealer.seal_task(task), rt.topics.tasks)
        # The submit of a task that came as JSON: a child of the JSON record's traceparent when its
        # producer sent one in the task's trace.
        parent = parent_from(_headers(msg), task["trace_id"])
        with span("submit", task["trace_id"], parent, attributes={
                "aios.task_id": task["task_id"], "aios.project_id": task["project_id"], "aios.source": INGRESS}):
            # Keyed by project_id like every producer of aios.tasks (the orchestrator's co-partitioning).
            await app.producer.send(rt.topics.tasks, task["project_id"].encode(), data,
                                    partition=None, timestamp=None, headers=faust_headers_for(task))

    async def ingest(stream: Any) -> None:
        async for event in stream.events():
            started = time.perf_counter()
            # An invalid record (InvalidJsonTaskError), or one from a submitter the allow-list does not
            # name (SubmitterNotAllowedError), is dead-lettered; an unreachable registry waited out.
            failure = await guarded(app, rt, event.message, INGRESS, partial(convert, event.message))
            outcome = "converted" if failure is None else (
                "not_allowed" if isinstance(failure, SubmitterNotAllowedError) else "dead_letter")
            EVENTS.labels(INGRESS, outcome).inc()
            PROCESSING.labels(INGRESS).observe(time.perf_counter() - started)

    app.agent(raw_topic(app, rt.topics.tasks_json), name=INGRESS)(ingest)


def _headers(msg: Any) -> HeadersIn:
    """A faust message's headers (pairs from aiokafka, or a mapping)."""
    headers = getattr(msg, "headers", None)
    return headers if isinstance(headers, dict | list | tuple) else None


class JsonEgress(BatchProcessor):
    """Republishes committed results as plain JSON for Connect sinks.

    On confluent-kafka's consumer, which reads committed data only: results are written in
    transactions, and faust's consumer (read_uncommitted outside its own exactly-once mode) would
    pass on results of aborted transactions too.
    """

    name = EGRESS

    def __init__(self, rt: Runtime) -> None:
        super().__init__(rt, [rt.topics.results], batch_size=500, wait_s=0.05)
        self.out = EventProducer(rt.settings, codec=rt.codec)

    async def apply(self, batch: list[Message]) -> None:
        limit = self.rt.codec.max_message_bytes
        for msg in batch:
            try:
                decoded = self.rt.codec.decode(msg.value())
            except SchemaError:
                # The history sink owns aios.results and dead-letters its garbage; one letter is enough.
                EVENTS.labels(EGRESS, "undecodable").inc()
                continue
            raw_key = msg.key()
            key = raw_key.decode(errors="replace") if isinstance(raw_key, bytes) else None
            result = decoded.value
            try:
                if not decoded.name.endswith(".TaskResult"):  # it decodes, so the history sink stores it
                    raise UndecodableError(f"{self.rt.topics.results} carries TaskResults, not {decoded.name}")
                check_result(result)
                data = result_to_json(result)
                if message_size(key, data) > limit:  # JSON escapes can make it several times the Avro
                    raise RecordTooLargeError(f"the result as JSON is {len(data)} bytes, over the {limit} bytes a "
                                              "topic takes (AIOS_MAX_MESSAGE_BYTES)")
            except SchemaError as exc:
                self.dead_letter(msg, exc)
                continue
            self.out.send_raw(self.rt.topics.results_json, data, key, passed_on(msg.headers()))
            EVENTS.labels(EGRESS, "published").inc()
        await asyncio.to_thread(self.out.flush)  # published before the batch's offsets commit


def register_egress(app: faust.App, rt: Runtime) -> None:
    rt.services.append(JsonEgress(rt))
