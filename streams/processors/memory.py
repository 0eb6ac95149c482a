"""The memory processor: applies MemoryEvents to Redis rolling-context windows, idempotently.

Batches go to Redis in one pipelined round trip; a replayed event (same memory_id) is a no-op.
"""

from __future__ import annotations

import json
from typing import Any

import faust
from confluent_kafka import Message

from schemas.errors import SchemaError
from schemas.events import to_ms
from streams.metrics import EVENTS
from streams.processors.batch import BatchProcessor, retry_forever
from streams.runtime import Runtime

NAME = "memory"


def turn_json(m: dict[str, Any]) -> str:
    return json.dumps(
        {"memory_id": m["memory_id"], "kind": m["kind"], "speaker": m["speaker"], "content": m["content"],
         "task_id": m["task_id"], "ts": to_ms(m["timestamp"])},
        separators=(",", ":"),
    )


class MemoryProcessor(BatchProcessor):
    name = NAME

    def __init__(self, rt: Runtime) -> None:
        super().__init__(rt, [rt.topics.memory], batch_size=500, wait_s=0.01)

    async def apply(self, batch: list[Message]) -> None:
        turns = []
        for msg in batch:
            try:
                m = self.rt.codec.decode(msg.value(), expect="MemoryEvent").value
            except SchemaError as exc:
                self.dead_letter(msg, exc)
                continue
            turns.append((m["scope"], m["scope_id"], m["memory_id"], turn_json(m)))
        applied = await retry_forever("memory: Redis", self.rt.context.append_many, turns)
        EVENTS.labels(NAME, "applied").inc(sum(applied))
        EVENTS.labels(NAME, "duplicate").inc(len(applied) - sum(applied))


def register(app: faust.App, rt: Runtime) -> None:
    rt.services.append(MemoryProcessor(rt))
