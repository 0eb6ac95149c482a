"""The memory processor: applies MemoryEvents to Redis rolling-context windows, idempotently.

Per batch: (with vector memory on) embed and index the events into Qdrant, then apply them to
Redis in one pipelined round trip (a replayed memory id is a no-op), then fold the turns the
batch pushed out of their windows into each window's running summary. A summary is produced as
a ``kind=summary`` MemoryEvent, durable on ``aios.memory`` before Redis stores it, so a rebuild
from the log sees the same summaries.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import faust
from confluent_kafka import Message

from agents.memory import extractive_summary
from connectors.redis_context import Turn
from connectors.vector_memory import MemoryItem
from schemas.errors import SchemaError
from schemas.events import envelope, to_ms
from streams.kafka import EventProducer
from streams.metrics import EVENTS
from streams.processors.batch import BatchProcessor, retry_forever
from streams.processors.common import log
from streams.runtime import Runtime

NAME = "memory"
SUMMARY_SPEAKER = "memory"
_ROLE = re.compile(r"^\[([a-z][a-z0-9_-]{0,39})\]")


def stored(m: dict[str, Any]) -> dict[str, Any]:
    """What Redis keeps of a MemoryEvent (for a summary, with its sequence number)."""
    data = {"memory_id": m["memory_id"], "kind": m["kind"], "speaker": m["speaker"], "content": m["content"],
            "task_id": m["task_id"], "project_id": m["project_id"], "ts": to_ms(m["timestamp"]),
            "tokens": int(m["tokens"])}
    if m["kind"] == "summary":
        data["seq"] = summary_seq(m["memory_id"])
    return data


def summary_id(scope: str, scope_id: str, seq: int) -> str:
    return f"{scope}:{scope_id}:summary:{seq}"


def summary_seq(memory_id: str) -> int:
    """The sequence number in a summary's memory id; 0 (applies only to an empty window) if none."""
    tail = memory_id.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def to_turn(m: dict[str, Any]) -> Turn:
    return Turn(m["scope"], m["scope_id"], m["memory_id"], m["kind"], stored(m))


def memory_item(m: dict[str, Any]) -> MemoryItem:
    role = _ROLE.match(m["content"])
    return MemoryItem(memory_id=m["memory_id"], text=m["content"], project=m["project_id"], scope=m["scope"],
                      scope_id=m["scope_id"], role=role.group(1) if role else "", kind=m["kind"],
                      ts=to_ms(m["timestamp"]), task_id=m["task_id"])


def decode_batch(rt: Runtime, batch: list[Message]) -> tuple[list[dict[str, Any]], list[tuple[Message, SchemaError]]]:
    events, errors = [], []
    for msg in batch:
        try:
            events.append(rt.codec.decode(msg.value(), expect="MemoryEvent").value)
        except SchemaError as exc:
            errors.append((msg, exc))
    return events, errors


class MemoryProcessor(BatchProcessor):
    name = NAME

    def __init__(self, rt: Runtime) -> None:
        super().__init__(rt, [rt.topics.memory], batch_size=500, wait_s=0.01)
        self.summaries = EventProducer(rt.settings, codec=rt.codec)

    async def on_start(self) -> None:
        if self.rt.settings.vector_memory:
            await self.rt.vector_memory()  # load the model before the first batch, not during it
        await super().on_start()

    async def apply(self, batch: list[Message]) -> None:
        events, errors = decode_batch(self.rt, batch)
        for msg, exc in errors:
            self.dead_letter(msg, exc)
        if self.rt.settings.vector_memory and events:
            # Indexed before Redis: a crash in between re-indexes on redelivery (same point ids).
            vm = await self.rt.vector_memory()
            await retry_forever("memory: Qdrant", self.rt.in_vector_thread, vm.upsert,
                                [memory_item(m) for m in events])
        applied = await retry_forever("memory: Redis", self.rt.context.apply_many, [to_turn(m) for m in events])
        EVENTS.labels(NAME, "applied").inc(sum(a.applied for a in applied))
        EVENTS.labels(NAME, "duplicate").inc(sum(not a.applied for a in applied))
        evicting: dict[tuple[str, str], str] = {}  # window -> its project
        for m, a in zip(events, applied, strict=True):
            if a.evicted:
                evicting[(m["scope"], m["scope_id"])] = m["project_id"]
        if evicting:
            await self.fold(evicting)

    async def fold(self, windows: dict[tuple[str, str], str]) -> None:
        """Fold each window's evicted turns into a new summary: produced first, then stored."""
        keys = list(windows)
        pending = await retry_forever("memory: Redis", self.rt.context.pending_folds, keys)
        events = []
        for (scope, scope_id), (current, turns) in zip(keys, pending, strict=True):
            if not turns:
                continue
            content = extractive_summary(
                current["content"] if current else "", [t["content"] for t in turns],
                budget_tokens=self.rt.settings.context_summary_tokens, count_tokens=self.rt.tokens.count)
            seq = (int(current["seq"]) if current else 0) + 1
            events.append({
                **envelope(), "memory_id": summary_id(scope, scope_id, seq), "scope": scope, "scope_id": scope_id,
                "project_id": windows[(scope, scope_id)], "kind": "summary", "speaker": SUMMARY_SPEAKER,
                "content": content, "task_id": None, "tokens": self.rt.tokens.count(content),
            })
        for event in events:
            self.summaries.send(self.rt.topics.memory, "MemoryEvent", event, key=event["scope_id"])
        await asyncio.to_thread(self.summaries.flush)  # raises (crash, redelivery) if not durable
        # The same events read back from the topic later are no-ops (their sequence is not newer).
        await retry_forever("memory: Redis", self.rt.context.apply_many, [to_turn(e) for e in events])
        EVENTS.labels(NAME, "summary").inc(len(events))
        log.debug("memory: folded %d windows", len(events))


def register(app: faust.App, rt: Runtime) -> None:
    rt.services.append(MemoryProcessor(rt))
