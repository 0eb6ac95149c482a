"""The memory processor: applies MemoryEvents to Redis rolling-context windows, idempotently."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import faust

from connectors.errors import StoreUnavailableError
from schemas.errors import SchemaError
from streams.metrics import EVENTS, PROCESSING
from streams.processors.common import dead_letter, decode_or_error, log, raw_topic
from streams.runtime import Runtime

NAME = "memory"


def turn_json(m: dict[str, Any]) -> str:
    return json.dumps(
        {"memory_id": m["memory_id"], "kind": m["kind"], "speaker": m["speaker"], "content": m["content"],
         "task_id": m["task_id"], "ts": int(m["timestamp"].timestamp() * 1000)},
        separators=(",", ":"),
    )


def register(app: faust.App, rt: Runtime) -> None:
    settings = rt.settings

    async def apply(stream: Any) -> None:
        # Batches: one pipelined Redis round trip per batch instead of one per event. Events are
        # acked after the batch is applied, so a crash re-applies it (idempotent by memory_id).
        async for events in stream.take_events(500, within=0.01):
            started = time.perf_counter()
            turns = []
            for event in events:
                m = decode_or_error(rt, event.value, "MemoryEvent")
                if isinstance(m, SchemaError):
                    await dead_letter(app, rt, event.message, NAME, m)
                    EVENTS.labels(NAME, "dead_letter").inc()
                    continue
                turns.append((m["scope"], m["scope_id"], m["memory_id"], turn_json(m)))
            applied = await _apply_with_retry(rt, turns, settings.sink_flush_s)
            EVENTS.labels(NAME, "applied").inc(sum(applied))
            EVENTS.labels(NAME, "duplicate").inc(len(applied) - sum(applied))
            PROCESSING.labels(NAME).observe(time.perf_counter() - started)

    app.agent(raw_topic(app, rt.topics.memory), name=NAME)(apply)


async def _apply_with_retry(rt: Runtime, turns: list[tuple[str, str, str, str]], base_s: float) -> list[bool]:
    """Redis down: wait and retry (the batch stays unacked), never drop memory."""
    backoff = base_s
    while True:
        try:
            return await rt.context.append_many(turns)
        except StoreUnavailableError as exc:
            log.warning("memory: %s; retrying %d turns in %.1fs", exc, len(turns), backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)
