"""Stateless agent workers: one faust agent per role, consuming ``<prefix>.agent.<role>``.

Each assignment reads the project's rolling context, asks the LLM, and emits the TaskResult,
the turn as a MemoryEvent, and the LlmCall.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import faust

from aios.agents.runner import AgentOutcome, AgentTask, CallRecord, TokenBudget, call_id, run_task
from aios.agents.tools import Search, read_only_tools
from aios.connectors.context.tokens import TokenCounter
from aios.connectors.errors import StoreUnavailableError
from aios.schemas.errors import SchemaError
from aios.schemas.events import envelope
from aios.streams.engine.records import dead_letter, decode_or_error, log, raw_topic, send
from aios.streams.engine.runtime import Runtime
from aios.streams.logs import ids_scope, set_processor
from aios.streams.metrics import EVENTS, LLM_COST, LLM_REPLAYS, LLM_TOKENS, PROCESSING, TASK_SECONDS, TASKS
from aios.streams.processors import agent_status

if TYPE_CHECKING:
    from aios.agents.lifecycle import Lifecycle
    from aios.connectors.vector.base import Recall

NAME = "agents"
# Enough parallel LLM calls per role to keep a slow provider busy; offsets still commit in order.
CONCURRENCY = 8
TOOLS = read_only_tools()


def result_event(a: dict[str, Any], outcome: AgentOutcome, agent_id: str, latency_ms: float,
                 recall: list[str] | None = None) -> dict[str, Any]:
    resp = outcome.response
    return {
        **envelope(a["trace_id"]),
        "task_id": a["task_id"],
        "project_id": a["project_id"],
        "role": a["role"],
        "attempt": a["attempt"],
        "status": "succeeded" if outcome.ok else "failed",
        "output": outcome.output,
        "error": outcome.error,
        "error_type": outcome.error_type,
        "agent_id": agent_id,
        "provider": resp.provider if resp else "",
        "model": resp.model if resp else "",
        "input_tokens": resp.usage.input_tokens if resp else 0,
        "output_tokens": resp.usage.output_tokens if resp else 0,
        "cost_usd": outcome.cost_usd,
        "latency_ms": latency_ms,
        "submitted_at": a["submitted_at"],
        "recall": recall or [],
    }


def memory_event(a: dict[str, Any], outcome: AgentOutcome, agent_id: str, tokens: TokenCounter) -> dict[str, Any]:
    turn = f"[{a['role']}] task {a['task_id']}: {a['description']}\n=> {outcome.output or outcome.error}"
    return {
        **envelope(a["trace_id"]),
        # Derived from the attempt, so a redelivered assignment re-emits the same memory id
        # and the memory processor appends the turn only once.
        "memory_id": f"{a['task_id']}:{a['attempt']}:turn",
        "scope": "project",
        "scope_id": a["project_id"],
        "project_id": a["project_id"],
        "kind": "turn",
        "speaker": agent_id,
        "content": turn,
        "task_id": a["task_id"],
        "tokens": tokens.count(turn),
    }


def llm_call_events(a: dict[str, Any], outcome: AgentOutcome, agent_id: str) -> list[dict[str, Any]]:
    """One LlmCall per step. Ids derive from (task, attempt, step): a replay re-emits the same
    event, which every store keeps once, so a call is never counted (or billed) twice."""
    return [llm_call_event(a, call, outcome, agent_id) for call in outcome.calls]


def llm_call_event(a: dict[str, Any], call: CallRecord, outcome: AgentOutcome, agent_id: str) -> dict[str, Any]:
    resp = call.response
    cid = call_id(a["project_id"], a["task_id"], a["attempt"], call.step)
    last = call is outcome.calls[-1]
    return {
        **envelope(a["trace_id"]),
        "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"aios:llm-call:{cid}")),
        "call_id": cid,
        "task_id": a["task_id"],
        "project_id": a["project_id"],
        "agent_id": agent_id,
        "attempt": a["attempt"],
        "step": call.step,
        "provider": resp.provider,
        "model": resp.model,
        "strategy": call.strategy,
        "input_tokens": resp.usage.input_tokens,
        "output_tokens": resp.usage.output_tokens,
        "cost_usd": call.cost_usd,
        "latency_ms": resp.latency_ms,
        "ttft_ms": resp.ttft_ms,
        # Every step but the last was answered; the last carries the task's outcome.
        "outcome": "ok" if outcome.ok or not last else (outcome.error_type or "error"),
        "error": None if outcome.ok or not last else outcome.error,
        "fallback_chain": list(call.fallback_chain),
        "redacted": call.redacted,
    }


def tool_messages(a: dict[str, Any], outcome: AgentOutcome, agent_id: str) -> list[dict[str, Any]]:
    """One AgentMessage per tool call, with what the tool returned; ids derive from the call,
    so a replay re-emits the same messages."""
    messages = []
    for record in outcome.tools:
        mid = f"{call_id(a['project_id'], a['task_id'], a['attempt'], record.step)}:{record.call.id}"
        content = {"tool": record.call.name, "arguments": dict(record.call.arguments), "result": record.result,
                   "step": record.step}
        messages.append({
            **envelope(a["trace_id"]),
            "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"aios:tool-call:{mid}")),
            "message_id": mid, "task_id": a["task_id"], "project_id": a["project_id"], "sender": agent_id,
            "recipient": None, "kind": "tool_call", "content": json.dumps(content, ensure_ascii=False),
        })
    return messages


def memory_search(rt: Runtime, a: dict[str, Any]) -> Search:
    """The search_memory tool's backend: vector recall when it is on, else the words of the
    project's rolling context window."""
    async def search(query: str, top_k: int) -> Sequence[str]:
        s = rt.settings
        if s.memory.vector_memory:
            vm = await rt.vector_memory()
            try:
                hits: list[Recall] = await rt.in_vector_thread(
                    vm.search, query, top_k, project=a["project_id"], score_threshold=s.memory.recall_threshold)
            except StoreUnavailableError as exc:
                log.warning("agents: search_memory found nothing: %s", exc)  # as recall: not fatal
                return []
            return [h.text for h in hits]
        words = {w for w in query.lower().split() if len(w) > 2}
        turns = [t["content"] for t in (await rt.context.read("project", a["project_id"])).turns]
        scored = sorted(((sum(w in t.lower() for w in words), -i, t) for i, t in enumerate(turns)), reverse=True)
        return [t for score, _, t in scored[:top_k] if score > 0]

    return search


def budget(rt: Runtime, role: str) -> TokenBudget:
    """The role's prompt budget, counted with the runtime's tokenizer."""
    return TokenBudget(rt.settings.memory.prompt_budget_for(role), rt.tokens.count, rt.tokens.truncate)


async def recall(rt: Runtime, a: dict[str, Any]) -> list[Recall]:
    """Top-k memories of the assignment's project most similar to its description (vector memory on)."""
    s = rt.settings
    if not s.memory.vector_memory:
        return []
    vm = await rt.vector_memory()
    try:
        hits: list[Recall] = await rt.in_vector_thread(
            vm.search, a["description"], s.memory.recall_top_k, project=a["project_id"], score_threshold=s.memory.recall_threshold)
    except StoreUnavailableError as exc:
        # Recall improves a prompt; a Qdrant outage must not fail the task.
        log.warning("agents: recall skipped: %s", exc)
        return []
    return hits


_attempt_locks: dict[tuple[str, int], tuple[asyncio.Lock, list[int]]] = {}


@asynccontextmanager
async def one_at_a_time(task_id: str, attempt: int) -> AsyncIterator[None]:
    """Serialise deliveries of one (task, attempt) within this worker.

    With several assignments in flight, a duplicate could otherwise call the LLM before the first
    delivery has journaled its answer; one after the other, the second replays the first.
    """
    key = (task_id, attempt)
    lock, users = _attempt_locks.setdefault(key, (asyncio.Lock(), [0]))
    users[0] += 1  # the entry lives while anyone holds or waits for the lock
    try:
        async with lock:
            yield
    finally:
        users[0] -= 1
        if users[0] == 0:
            del _attempt_locks[key]


def _make_handler(app: faust.App, rt: Runtime, role: str, lifecycle: Lifecycle) -> Any:
    async def work(stream: Any) -> None:
        set_processor(f"{NAME}:{role}")
        async for event in stream.events():
            started = time.perf_counter()
            a = decode_or_error(rt, event.value, "Assignment")
            if isinstance(a, SchemaError):
                await dead_letter(app, rt, event.message, f"{NAME}:{role}", a)
                EVENTS.labels(NAME, "dead_letter").inc()
                TASKS.labels(role, "dead_letter").inc()
                continue
            if not lifecycle.begin(a["task_id"]):
                await agent_status.hand_back(app, event)
                continue
            try:
                # An exception here crashes this actor, and faust's supervisor restarts it; the
                # worker says `failed` only if the app itself goes down (Runtime.on_failure).
                with ids_scope(task_id=a["task_id"], project_id=a["project_id"], trace_id=a["trace_id"]):
                    await _handle(app, rt, a, started)
            finally:
                lifecycle.end(a["task_id"])

    return work


async def _handle(app: faust.App, rt: Runtime, a: dict[str, Any], started: float) -> None:
    """One assignment: read context, run the task, emit the attempt, the turn and the LLM calls."""
    window = await rt.context.read("project", a["project_id"])
    recalled = await recall(rt, a)
    task = AgentTask(
        task_id=a["task_id"], project_id=a["project_id"], role=a["role"],
        description=a["description"], attempt=a["attempt"], context=a["context"],
        history=[t["content"] for t in window.turns],
        summary=window.summary["content"] if window.summary else "",
        recall=[r.text for r in recalled], privacy=a.get("privacy") or "normal",
        strategy=a.get("strategy"),
    )
    async with one_at_a_time(task.task_id, task.attempt):
        outcome = await run_task(rt.router, task, budget(rt, a["role"]), journal=rt.journal,
                                 tools=TOOLS if rt.settings.llm.agent_tools else None, search=memory_search(rt, a))
    latency_ms = (time.perf_counter() - started) * 1000
    key = a["task_id"]
    result = result_event(a, outcome, rt.agent_id, latency_ms, [r.id for r in recalled])
    # The attempt goes to the orchestrator (keyed by project, co-partitioned with its inputs),
    # which decides on retries and publishes the one terminal result.
    await send(app, rt, rt.topics.attempts, "TaskResult", result, a["project_id"])
    memory = memory_event(a, outcome, rt.agent_id, rt.tokens)
    await send(app, rt, rt.topics.memory, "MemoryEvent", memory, a["project_id"])
    for message in tool_messages(a, outcome, rt.agent_id):
        await send(app, rt, rt.topics.messages, "AgentMessage", message, key)
    for record, call in zip(outcome.calls, llm_call_events(a, outcome, rt.agent_id), strict=True):
        await send(app, rt, rt.topics.llm_calls, "LlmCall", call, key)
        if record.replayed:
            LLM_REPLAYS.inc()
            continue  # counted when it was paid for
        LLM_TOKENS.labels(call["provider"], call["model"], "input").inc(call["input_tokens"])
        LLM_TOKENS.labels(call["provider"], call["model"], "output").inc(call["output_tokens"])
        LLM_COST.labels(call["provider"], call["model"]).inc(call["cost_usd"])
    status = "succeeded" if outcome.ok else "failed"
    log.info("agents: attempt %d %s in %.0f ms%s", a["attempt"], status, latency_ms,
             f": {outcome.error_type}: {outcome.error}" if not outcome.ok else "")
    EVENTS.labels(NAME, status).inc()
    TASKS.labels(a["role"], status).inc()
    elapsed = time.perf_counter() - started
    PROCESSING.labels(NAME).observe(elapsed)
    TASK_SECONDS.labels(a["role"]).observe(elapsed)


def register(app: faust.App, rt: Runtime) -> None:
    lifecycle = agent_status.attach(app, rt)  # one per worker process, whatever its roles
    for role in rt.settings.processing.roles:
        topic = raw_topic(app, rt.topics.role(role))
        app.agent(topic, name=f"{NAME}-{role}", concurrency=CONCURRENCY)(_make_handler(app, rt, role, lifecycle))
