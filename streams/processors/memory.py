"""The memory processor: applies MemoryEvents to Redis rolling-context windows, idempotently."""

from __future__ import annotations

import json
import time
from typing import Any

import faust

from schemas.errors import SchemaError
from streams.metrics import EVENTS, PROCESSING
from streams.processors.common import dead_letter, decode_or_error, raw_topic
from streams.runtime import Runtime

NAME = "memory"


def turn_json(m: dict[str, Any]) -> str:
    return json.dumps(
        {"memory_id": m["memory_id"], "kind": m["kind"], "speaker": m["speaker"], "content": m["content"],
         "task_id": m["task_id"], "ts": int(m["timestamp"].timestamp() * 1000)},
        separators=(",", ":"),
    )


def register(app: faust.App, rt: Runtime) -> None:
    async def apply(stream: Any) -> None:
        async for event in stream.events():
            started = time.perf_counter()
            m = decode_or_error(rt, event.value, "MemoryEvent")
            if isinstance(m, SchemaError):
                await dead_letter(app, rt, event.message, NAME, m)
                EVENTS.labels(NAME, "dead_letter").inc()
                continue
            applied = await rt.context.append(m["scope"], m["scope_id"], m["memory_id"], turn_json(m))
            EVENTS.labels(NAME, "applied" if applied else "duplicate").inc()
            PROCESSING.labels(NAME).observe(time.perf_counter() - started)

    app.agent(raw_topic(app, rt.topics.memory), name=NAME)(apply)
