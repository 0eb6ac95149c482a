"""The memory processor: applies MemoryEvents to Redis rolling-context windows, idempotently.

Per batch: (with vector memory on) embed and index the events into Qdrant, then apply them to
Redis in one pipelined round trip (a replayed memory id is a no-op), then fold the turns the
batch pushed out of their windows into each window's running summary. A summary is produced as
a ``kind=summary`` MemoryEvent, durable on ``aios.memory`` before Redis stores it, so a rebuild
from the log sees the same summaries (a rebuild never calls the LLM again).

The summary is written by the runtime's LLM (its speaker names the model, and the call is an
LlmCall event like any other), or by the labelled extractive fallback when the only provider is
the offline one or the LLM call fails.

Restricted memory (``privacy=restricted``) lives in its own window lane and stays on local models:
its summaries are written by local deployments only (extractive when there is none), it is embedded
only by the local model (left out of Qdrant with provider embeddings), and, with
``AIOS_ENCRYPTION_KEY``, it is opened here only to embed and summarise, and its summaries are sealed.
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
from aios.connectors.context.windows import Turn, base_scope, is_restricted_lane, lane
from aios.connectors.vector.base import MemoryItem
from aios.schemas.checks import check_memory
from aios.schemas.errors import SchemaError
from aios.schemas.events import envelope, new_id, to_ms
from aios.schemas.sealed import SealedFieldError, is_sealed
from aios.streams.engine.batch import BatchProcessor, retry_forever
from aios.streams.engine.records import log
from aios.streams.engine.runtime import Runtime
from aios.streams.kafka import EventProducer
from aios.streams.metrics import EVENTS, LLM_COST, LLM_TOKENS, RESTRICTED_KEPT_LOCAL, observe_genai_call
from aios.streams.sealing import RESTRICTED, Sealer, is_restricted, memory_aad
from aios.streams.tracing import enabled as tracing_enabled
from aios.streams.tracing import now_ns, parent_from, record_span

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


def summary_llm(rt: Runtime, *, restricted: bool = False) -> Complete | None:
    """What writes summaries: the runtime's LLM router (cheapest small-tier model), or None
    (extractive) when every deployment is the offline provider. A restricted window's summary is
    routed as a restricted call (local deployments only), and is extractive when there is none."""
    from aios.agents.llm.router import Route, Strategy

    router = rt.router
    usable = [d for d in router.deployments if not d.provider.offline and (d.local or not restricted)]
    if not usable:
        return None
    privacy = RESTRICTED if restricted else "normal"

    async def complete(request: ChatRequest) -> ChatResponse:
        return (await router.complete(Route(request, tier="small", strategy=Strategy.COST,
                                            privacy=privacy))).response

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
    """The Redis write of a MemoryEvent: restricted memory goes to its scope's restricted lane."""
    return Turn(lane(m["scope"], is_restricted(m.get("privacy"))), m["scope_id"], m["memory_id"], m["kind"],
                stored(m))


def memory_item(m: dict[str, Any], text: str | None = None) -> MemoryItem:
    """The Qdrant point of a MemoryEvent; ``text`` is its opened content when the stored one is sealed
    (the payload keeps the sealed text, the vector is of the plaintext)."""
    plain = m["content"] if text is None else text
    role = _ROLE.match(plain)
    restricted = is_restricted(m.get("privacy"))
    return MemoryItem(memory_id=m["memory_id"], text=m["content"], project=m["project_id"], scope=m["scope"],
                      scope_id=m["scope_id"], role=role.group(1) if role else "", kind=m["kind"],
                      ts=to_ms(m["timestamp"]), task_id=m["task_id"], privacy=RESTRICTED if restricted else "normal",
                      embed_text=None if text is None or text == m["content"] else text)


def index_items(events: list[dict[str, Any]], sealer: Sealer, *, local_embedder: bool,
                processor: str = "memory") -> list[MemoryItem]:
    """The events to index into Qdrant. Restricted memory is embedded only by the local model: with
    provider embeddings it is left out (its text would be sent to the provider). Sealed content is
    opened to embed it; content that cannot be opened here is left out, counted."""
    items = []
    for m in events:
        if is_restricted(m.get("privacy")) and not local_embedder:
            RESTRICTED_KEPT_LOCAL.labels(processor, "not_embedded").inc()
            continue
        try:
            text = sealer.open(m["content"], memory_aad(m["project_id"], m["memory_id"]))
        except SealedFieldError as exc:
            log.warning("%s: memory %s not indexed: %s", processor, m["memory_id"], exc)
            continue
        items.append(memory_item(m, text))
    return items


def _opened(sealer: Sealer, stored_turn: dict[str, Any]) -> str:
    """A stored turn's or summary's text, opened; a sealed one this process cannot open is named, not
    folded as ciphertext."""
    content: str = stored_turn["content"]
    if not is_sealed(content):  # the common case: nothing to open, no identity to build
        return content
    try:
        return sealer.open(content, memory_aad(stored_turn["project_id"], stored_turn["memory_id"]))
    except SealedFieldError:
        return "[a sealed turn this memory processor cannot open: set AIOS_ENCRYPTION_KEY]"


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


def trace_writes(batch: list[Message], errors: list[tuple[Message, SchemaError]], events: list[dict[str, Any]],
                 applied: list[bool], started_ns: int) -> None:
    """A ``memory write`` span per event, each the whole batch's write (they are written together)."""
    failed = {id(msg) for msg, _ in errors}
    good = [msg for msg in batch if id(msg) not in failed]
    end_ns = now_ns()
    for msg, m, was_applied in zip(good, events, applied, strict=True):
        record_span("memory write", m["trace_id"], parent_from(msg.headers()), started_ns, end_ns, attributes={
            "aios.project_id": m["project_id"], "aios.task_id": m["task_id"] or "", "aios.memory.scope": m["scope"],
            "aios.memory.kind": m["kind"], "aios.memory.applied": was_applied, "aios.batch_size": len(batch)})


class MemoryProcessor(BatchProcessor):
    name = NAME

    def __init__(self, rt: Runtime) -> None:
        # Large batches: the per-batch costs (offset commit, summary flush, fold reads) dominated at
        # 500, and a window's turns in one batch fold into one summary. A batch is only this large
        # when there is a backlog; otherwise consume returns what arrived within wait_s.
        super().__init__(rt, [rt.topics.memory], batch_size=2000, wait_s=0.01)
        self.summaries = EventProducer(rt.settings, codec=rt.codec)
        self.sealer = rt.sealer
        self.complete: Complete | None = None
        self.complete_restricted: Complete | None = None

    async def on_start(self) -> None:
        self.complete = summary_llm(self.rt)  # a misconfigured provider fails here, at start
        self.complete_restricted = summary_llm(self.rt, restricted=True)
        if self.rt.settings.memory.vector_memory:
            await self.rt.vector_memory()  # load the model before the first batch, not during it
        await super().on_start()

    async def apply(self, batch: list[Message]) -> None:
        started_ns = now_ns()
        events, errors = decode_batch(self.rt, batch)
        for msg, exc in errors:
            self.dead_letter(msg, exc)
        if self.rt.settings.memory.vector_memory and events:
            # Indexed before Redis: a crash in between re-indexes on redelivery (same point ids).
            vm = await self.rt.vector_memory()
            items = index_items(events, self.sealer, local_embedder=self.rt.settings.memory.embeddings == "local")
            await retry_forever("memory: Qdrant", self.rt.in_vector_thread, vm.upsert, items)
        turns = [to_turn(m) for m in events]
        applied = await retry_forever("memory: Redis", self.rt.context.apply_many, turns)
        EVENTS.labels(NAME, "applied").inc(sum(a.applied for a in applied))
        EVENTS.labels(NAME, "duplicate").inc(sum(not a.applied for a in applied))
        if tracing_enabled():
            trace_writes(batch, errors, events, [a.applied for a in applied], started_ns)
        evicting: dict[tuple[str, str], str] = {}  # window (its lane scope, id) -> its project
        for m, turn, a in zip(events, turns, applied, strict=True):
            if a.evicted:
                evicting[(turn.scope, turn.scope_id)] = m["project_id"]
        if evicting:
            await self.fold(evicting)

    async def fold(self, windows: dict[tuple[str, str], str]) -> None:
        """Fold each window's evicted turns into a new summary: produced first, then stored."""
        keys = list(windows)
        pending = await retry_forever("memory: Redis", self.rt.context.pending_folds, keys)
        todo = [(window, current, turns) for window, (current, turns) in zip(keys, pending, strict=True) if turns]
        s, tokens = self.rt.settings, self.rt.tokens
        # One LLM call per window, concurrently: a batch can push turns out of many windows. A
        # restricted lane's turns are opened here and summarised by local deployments only.
        summaries = await asyncio.gather(*(
            fold_summary(_opened(self.sealer, current) if current else "", [_opened(self.sealer, t) for t in turns],
                         budget_tokens=s.memory.context_summary_tokens, count_tokens=tokens.count,
                         truncate=tokens.truncate,
                         complete=self.complete_restricted if is_restricted_lane(window[0]) else self.complete,
                         input_tokens=s.memory.tokens_for(base_scope(window[0])) + s.memory.context_summary_tokens)
            for window, current, turns in todo))
        events, calls = [], []
        for ((scope, scope_id), current, _), summary in zip(todo, summaries, strict=True):
            if summary.error is not None:
                log.warning("memory: LLM summary of %s %s failed, extractive instead: %s", scope, scope_id,
                            summary.error)
                EVENTS.labels(NAME, "summary_fallback").inc()
            restricted = is_restricted_lane(scope)
            if restricted and summary.response is None:
                RESTRICTED_KEPT_LOCAL.labels(NAME, "summary_extractive").inc()
            seq = (int(current["seq"]) if current else 0) + 1
            project, memory_id = windows[(scope, scope_id)], summary_id(scope, scope_id, seq)
            content = self.sealer.seal(summary.text, memory_aad(project, memory_id)) if restricted else summary.text
            event = {
                **envelope(), "memory_id": memory_id, "scope": base_scope(scope), "scope_id": scope_id,
                "project_id": project, "kind": "summary", "speaker": summary_speaker(summary),
                "content": content, "task_id": None, "tokens": tokens.count(summary.text),
                "privacy": RESTRICTED if restricted else "normal",
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
            observe_genai_call(call["provider"], call["model"], call["input_tokens"], call["output_tokens"],
                               call["latency_ms"] / 1000)
        for event in events:
            self.summaries.send(self.rt.topics.memory, "MemoryEvent", event, key=event["scope_id"])
        await asyncio.to_thread(self.summaries.flush)  # raises (crash, redelivery) if not durable
        # The same events read back from the topic later are no-ops (their sequence is not newer).
        await retry_forever("memory: Redis", self.rt.context.apply_many, [to_turn(e) for e in events])
        EVENTS.labels(NAME, "summary").inc(len(events))
        log.debug("memory: folded %d windows", len(events))


def register(app: faust.App, rt: Runtime) -> None:
    rt.services.append(MemoryProcessor(rt))
