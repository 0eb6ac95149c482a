"""The memory processor: applies MemoryEvents to Redis rolling-context windows, idempotently.

Per batch: (with vector memory on) embed and index the events into Qdrant, then apply them to
Redis in one pipelined round trip (a replayed memory id is a no-op), then fold the turns the
batch pushed out of their windows into each window's running summary. A summary is produced as
a ``kind=summary`` MemoryEvent, durable on ``aios.memory`` before Redis stores it, so a rebuild
from the log sees the same summaries (a rebuild never calls the LLM again).

The summary is written by the runtime's LLM (its speaker names the model, and the call is an
LlmCall event like any other), or by the labelled extractive fallback when the only provider is
the offline one or the LLM call fails.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import faust
from confluent_kafka import Message

from aios.agents.llm.base import ChatRequest, ChatResponse
from aios.agents.llm.catalogue import Catalogue, cost_usd, load_catalogue
from aios.agents.memory import EXTRACTIVE_SOURCE, Complete, Summary, fold_summary
from aios.connectors.context.windows import Turn
from aios.connectors.vector.base import MemoryItem
from aios.schemas.checks import check_memory
from aios.schemas.errors import SchemaError
from aios.schemas.events import envelope, new_id, to_ms
from aios.streams.engine.batch import BatchProcessor, retry_forever
from aios.streams.engine.records import log
from aios.streams.engine.runtime import Runtime
from aios.streams.kafka import EventProducer
from aios.streams.metrics import EVENTS, LLM_COST, LLM_TOKENS

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


def summary_llm(rt: Runtime) -> Complete | None:
    """What writes summaries: the runtime's LLM router (cheapest small-tier model), or None
    (extractive) when every deployment is the offline provider."""
    from aios.agents.llm.router import Route, Strategy

    router = rt.router
    if all(d.provider.offline for d in router.deployments):
        return None

    async def complete(request: ChatRequest) -> ChatResponse:
        return (await router.complete(Route(request, tier="small", strategy=Strategy.COST))).response

    return complete


def summary_speaker(summary: Summary) -> str:
    return SUMMARY_SPEAKER if summary.source == EXTRACTIVE_SOURCE else f"{SUMMARY_SPEAKER}:{summary.source}"


def summary_call_event(event: dict[str, Any], summary: Summary, agent_id: str,
                       catalogue: Catalogue | None = None) -> dict[str, Any] | None:
    """The LlmCall that produced ``event``'s summary (None for an extractive one), for cost accounting;
    priced from ``catalogue`` (the runtime's, with the models of AIOS_LLM_CONFIG)."""
    resp = summary.response
    if resp is None:
        return None
    catalogue = catalogue or load_catalogue()
    return {
        **envelope(event["trace_id"]), "call_id": new_id(), "task_id": None, "project_id": event["project_id"],
        "agent_id": agent_id, "attempt": 1, "step": 0, "provider": resp.provider, "model": resp.model,
        "strategy": "memory-summary", "input_tokens": resp.usage.input_tokens,
        "output_tokens": resp.usage.output_tokens,
        "cost_usd": cost_usd(catalogue.get(resp.provider, resp.model), resp.usage),
        "latency_ms": resp.latency_ms, "ttft_ms": resp.ttft_ms, "outcome": "ok", "error": None,
    }


def to_turn(m: dict[str, Any]) -> Turn:
    return Turn(m["scope"], m["scope_id"], m["memory_id"], m["kind"], stored(m))


def memory_item(m: dict[str, Any]) -> MemoryItem:
    role = _ROLE.match(m["content"])
    return MemoryItem(memory_id=m["memory_id"], text=m["content"], project=m["project_id"], scope=m["scope"],
                      scope_id=m["scope_id"], role=role.group(1) if role else "", kind=m["kind"],
                      ts=to_ms(m["timestamp"]), task_id=m["task_id"])


def decode_batch(rt: Runtime, batch: list[Message]) -> tuple[list[dict[str, Any]], list[tuple[Message, SchemaError]]]:
    """The batch's MemoryEvents, each checked against the shared limits, and the records that fail."""
    events, errors = [], []
    for msg in batch:
        try:
            event = rt.codec.decode(msg.value(), expect="MemoryEvent").value
            check_memory(event)
            events.append(event)
        except SchemaError as exc:
            errors.append((msg, exc))
    return events, errors


class MemoryProcessor(BatchProcessor):
    name = NAME

    def __init__(self, rt: Runtime) -> None:
        # Large batches: the per-batch costs (offset commit, summary flush, fold reads) dominated at
        # 500, and a window's turns in one batch fold into one summary. A batch is only this large
        # when there is a backlog; otherwise consume returns what arrived within wait_s.
        super().__init__(rt, [rt.topics.memory], batch_size=2000, wait_s=0.01)
        self.summaries = EventProducer(rt.settings, codec=rt.codec)
        self.complete: Complete | None = None

    async def on_start(self) -> None:
        self.complete = summary_llm(self.rt)  # a misconfigured provider fails here, at start
        if self.rt.settings.memory.vector_memory:
            await self.rt.vector_memory()  # load the model before the first batch, not during it
        await super().on_start()

    async def apply(self, batch: list[Message]) -> None:
        events, errors = decode_batch(self.rt, batch)
        for msg, exc in errors:
            self.dead_letter(msg, exc)
        if self.rt.settings.memory.vector_memory and events:
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
        todo = [(window, current, turns) for window, (current, turns) in zip(keys, pending, strict=True) if turns]
        s, tokens = self.rt.settings, self.rt.tokens
        # One LLM call per window, concurrently: a batch can push turns out of many windows.
        summaries = await asyncio.gather(*(
            fold_summary(current["content"] if current else "", [t["content"] for t in turns],
                         budget_tokens=s.memory.context_summary_tokens, count_tokens=tokens.count,
                         truncate=tokens.truncate, complete=self.complete,
                         input_tokens=s.memory.tokens_for(window[0]) + s.memory.context_summary_tokens)
            for window, current, turns in todo))
        events, calls = [], []
        for ((scope, scope_id), current, _), summary in zip(todo, summaries, strict=True):
            if summary.error is not None:
                log.warning("memory: LLM summary of %s %s failed, extractive instead: %s", scope, scope_id,
                            summary.error)
                EVENTS.labels(NAME, "summary_fallback").inc()
            seq = (int(current["seq"]) if current else 0) + 1
            event = {
                **envelope(), "memory_id": summary_id(scope, scope_id, seq), "scope": scope, "scope_id": scope_id,
                "project_id": windows[(scope, scope_id)], "kind": "summary", "speaker": summary_speaker(summary),
                "content": summary.text, "task_id": None, "tokens": tokens.count(summary.text),
            }
            events.append(event)
            call = summary_call_event(event, summary, self.rt.agent_id, self.rt.catalogue)
            if call is not None:
                calls.append(call)
        for call in calls:
            self.summaries.send(self.rt.topics.llm_calls, "LlmCall", call, key=call["project_id"])
            LLM_TOKENS.labels(call["provider"], call["model"], "input").inc(call["input_tokens"])
            LLM_TOKENS.labels(call["provider"], call["model"], "output").inc(call["output_tokens"])
            LLM_COST.labels(call["provider"], call["model"]).inc(call["cost_usd"])
        for event in events:
            self.summaries.send(self.rt.topics.memory, "MemoryEvent", event, key=event["scope_id"])
        await asyncio.to_thread(self.summaries.flush)  # raises (crash, redelivery) if not durable
        # The same events read back from the topic later are no-ops (their sequence is not newer).
        await retry_forever("memory: Redis", self.rt.context.apply_many, [to_turn(e) for e in events])
        EVENTS.labels(NAME, "summary").inc(len(events))
        log.debug("memory: folded %d windows", len(events))


def register(app: faust.App, rt: Runtime) -> None:
    rt.services.append(MemoryProcessor(rt))
