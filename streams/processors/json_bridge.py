"""The JSON bridges for Kafka Connect: plain-JSON tasks in, results out as plain JSON.

``json-ingress`` reads ``<prefix>.tasks-json`` (one JSON object per record: FileStreamSource,
kcat, any producer), validates each record and produces it as an Avro Task on ``<prefix>.tasks``;
an invalid record goes to the DLQ with the reason. ``json-egress`` republishes every terminal
TaskResult from ``<prefix>.results`` as one line of JSON on ``<prefix>.results-json``, for
Connect sinks that read JSON (FileStreamSink, the ClickHouse and HTTP sinks).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import faust
from confluent_kafka import Message

from aios.schemas.errors import SchemaError
from aios.schemas.json_task import SubmitterNotAllowedError, check_submitter, result_to_json, task_from_json
from aios.streams.engine.batch import BatchProcessor
from aios.streams.engine.records import dead_letter, decode_or_error, raw_topic
from aios.streams.engine.runtime import Runtime
from aios.streams.kafka import EventProducer, make_codec
from aios.streams.metrics import EVENTS, PROCESSING

INGRESS = "json-ingress"
EGRESS = "json-egress"


def register_ingress(app: faust.App, rt: Runtime) -> None:
    # Records from outside are checked against the Task schema before they are produced.
    codec = make_codec(rt.settings, validate=True)

    async def ingest(stream: Any) -> None:
        async for event in stream.events():
            started = time.perf_counter()
            msg = event.message
            try:
                task = task_from_json(event.value, roles=rt.settings.processing.roles,
                                      source=f"{msg.topic}/{msg.partition}/{msg.offset}")
                check_submitter(task, rt.settings.processing.ingress_submitters)
                # A restricted description is sealed before it reaches aios.tasks (AIOS_ENCRYPTION_KEY).
                data = codec.encode("Task", rt.sealer.seal_task(task), rt.topics.tasks)
            except SchemaError as exc:  # InvalidJsonTaskError and SubmitterNotAllowedError included
                await dead_letter(app, rt, msg, INGRESS, exc)
                EVENTS.labels(INGRESS, "not_allowed" if isinstance(exc, SubmitterNotAllowedError)
                              else "dead_letter").inc()
                continue
            # Keyed by project_id like every producer of aios.tasks (the orchestrator's co-partitioning).
            await app.producer.send(rt.topics.tasks, task["project_id"].encode(), data,
                                    partition=None, timestamp=None, headers=None)
            EVENTS.labels(INGRESS, "converted").inc()
            PROCESSING.labels(INGRESS).observe(time.perf_counter() - started)

    app.agent(raw_topic(app, rt.topics.tasks_json), name=INGRESS)(ingest)


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
        for msg in batch:
            result = decode_or_error(self.rt, msg.value(), "TaskResult")
            if isinstance(result, SchemaError):
                # The history sink owns aios.results and dead-letters its garbage; one letter is enough.
                EVENTS.labels(EGRESS, "undecodable").inc()
                continue
            key = msg.key()
            self.out.send_raw(self.rt.topics.results_json, result_to_json(result),
                                key.decode() if isinstance(key, bytes) else None)
            EVENTS.labels(EGRESS, "published").inc()
        await asyncio.to_thread(self.out.flush)  # published before the batch's offsets commit


def register_egress(app: faust.App, rt: Runtime) -> None:
    rt.services.append(JsonEgress(rt))
