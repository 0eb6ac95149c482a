"""Stateless agent workers: one concurrent processor (``streams/engine/concurrent.py``) over the
role topics ``<prefix>.agent.<role>``, with up to AIOS_AGENT_MAX_IN_FLIGHT assignments in flight.

Each assignment says it started (the orchestrator times the attempt from then), reads the
project's rolling context, asks the LLM (streaming live tokens to ``<prefix>.tokens``), and emits
the attempt, the turn as a MemoryEvent, the LlmCalls and the tool calls. A cancel on the control
topic reaches the assignments of its task or project: the call in flight is interrupted and the
attempt ends ``cancelled``. A Redis outage holds an assignment in flight, uncommitted, and runs it
again when Redis is back; the LLM journal answers the calls it already made.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import faust
from confluent_kafka import Message
from opentelemetry import trace

from aios.agents.cancellation import Cancellation
from aios.agents.runner import AgentOutcome, AgentTask, Journal, TokenBudget, run_task, system_prompt
from aios.agents.tools import Toolbox
from aios.agents.tools_artifacts import WriteArtifact
from aios.agents.tools_ask import AskAgent, Asker
from aios.connectors.errors import StoreUnavailableError
from aios.schemas.errors import SchemaError
from aios.schemas.events import now_ms, to_ms
from aios.schemas.sealed import SealedFieldError, is_sealed
from aios.streams.artifacts import attempt_saver, output_artifact
from aios.streams.engine.concurrent import ConcurrentProcessor, Unstarted
from aios.streams.engine.control import ControlListener
from aios.streams.engine.records import decode_or_error, log
from aios.streams.engine.runtime import Runtime
from aios.streams.logs import ids_scope, set_processor
from aios.streams.metrics import (
    CANCEL_SECONDS,
    CANCELLED_WORK,
    EVENTS,
    LLM_COST,
    LLM_REPLAYS,
    LLM_TOKENS,
    OUTPUTS_OFFLOADED,
    PROCESSING,
    TASK_SECONDS,
    TASKS,
    TOOL_REPLAYS,
    observe_genai_call,
)
from aios.streams.processors import agent_status
from aios.streams.processors.agent_control import Broadcasts
from aios.streams.processors.agent_events import (
    attempt_status,
    llm_call_events,
    result_event,
    started_event,
    tool_messages,
)
from aios.streams.processors.agent_mcp import RoleToolboxes
from aios.streams.processors.agent_privacy import (
    journal_for,
    memory_event,
    memory_search,
    open_assignment,
    read_memory,
    recall,
    seal_outputs,
)
from aios.streams.processors.agent_tools import RoleTools
from aios.streams.processors.ask_replies import AskSender, ResultsWatcher, count_question
from aios.streams.processors.live_tokens import TokenStream
from aios.streams.readmodels.outputs import output_fetcher
from aios.streams.tracing import capture_content, headers_for, parent_from, span

if TYPE_CHECKING:
    from aios.agents.lifecycle import Lifecycle
    from aios.connectors.vector.base import Recall

NAME = "agents"
RECENT_CANCELS = 10_000  # cancels remembered for assignments still queued when they arrived
CANCEL_MEMORY_S = 3600.0


def budget(rt: Runtime, role: str) -> TokenBudget:
    """The role's prompt budget, counted with the runtime's tokenizer."""
    return TokenBudget(rt.settings.memory.prompt_budget_for(role), rt.tokens.count, rt.tokens.truncate)


_attempt_locks: dict[tuple[str, str, int], tuple[asyncio.Lock, list[int]]] = {}


@asynccontextmanager
async def one_at_a_time(project: str, task_id: str, attempt: int) -> AsyncIterator[None]:
    """Serialise deliveries of one (project, task, attempt) within this worker.

    With several assignments in flight, a duplicate could otherwise call the LLM before the first
    delivery has journaled its answer; one after the other, the second replays the first.
    """
    key = (project, task_id, attempt)
    lock, users = _attempt_locks.setdefault(key, (asyncio.Lock(), [0]))
    users[0] += 1  # the entry lives while anyone holds or waits for the lock
    try:
        async with lock:
            yield
    finally:
        users[0] -= 1
        if users[0] == 0:
            del _attempt_locks[key]


class RetryingJournal:
    """The LLM journal, waiting out a Redis outage instead of failing: an answer that was paid for
    is recorded once Redis is back, so running the assignment again never calls the LLM again."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal

    async def get(self, task_id: str, attempt: int, step: int) -> Mapping[str, Any] | None:
        found: Mapping[str, Any] | None = await _patiently(self._journal.get, task_id, attempt, step)
        return found

    async def put(self, task_id: str, attempt: int, step: int, record: Mapping[str, Any]) -> None:
        await _patiently(self._journal.put, task_id, attempt, step, record)


async def _patiently(call: Any, *args: Any) -> Any:
    backoff = 0.2
    while True:
        try:
            return await call(*args)
        except StoreUnavailableError as exc:
            log.warning("agents: the LLM journal is unavailable (%s); retrying in %.1fs", exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)


class RecentCancels:
    """Cancels heard lately, by project and by (project, task), so an assignment that was still
    queued when its cancel went out is not started at all. Bounded in size and age."""

    def __init__(self, size: int = RECENT_CANCELS, max_age_s: float = CANCEL_MEMORY_S) -> None:
        self._seen: OrderedDict[tuple[str, str | None], tuple[float, str]] = OrderedDict()
        self._size, self._max_age_s = size, max_age_s

    def add(self, project: str, task: str | None, reason: str) -> None:
        self._seen[(project, task)] = (time.monotonic(), reason)
        self._seen.move_to_end((project, task))
        while len(self._seen) > self._size:
            self._seen.popitem(last=False)

    def reason(self, project: str, task: str) -> str | None:
        for key in ((project, task), (project, None)):
            hit = self._seen.get(key)
            if hit is not None and time.monotonic() - hit[0] < self._max_age_s:
                return hit[1]
        return None


class AgentWorker(ConcurrentProcessor):
    """Every role of AIOS_ROLES, in one group per worker process (``<prefix>-agents``)."""

    name = NAME

    def __init__(self, rt: Runtime, listener: ControlListener, watcher: ResultsWatcher) -> None:
        s = rt.settings
        super().__init__(rt, rt.topics.role_topics(), max_in_flight=s.processing.agent_max_in_flight)
        self.lifecycle: Lifecycle
        self.lifecycle, self._heartbeat = agent_status.attach(rt, self)
        self.token_interval_s = s.processing.token_interval_ms / 1000
        self.running: dict[tuple[str, str], list[Cancellation]] = {}
        self.cancels = RecentCancels()
        self.tools = RoleTools(s)  # the remote A2A agents by role
        self._cancel_asked: dict[int, int] = {}  # id(cancellation) -> the cancel event's timestamp (ms)
        self.toolboxes = RoleToolboxes(rt)  # the read-only tools and the MCP tools of each role
        listener.on("cancel", self.on_cancel)
        self.asks = AskSender(rt, watcher, self.send_acked, self.send)
        self.broadcasts = Broadcasts(rt, listener, self.begin_drain)  # drain and reload

    async def on_start(self) -> None:
        # Built now, not by the first assignment: loading the SDKs and the tokenizer blocks the event
        # loop for seconds on a busy machine, which would hold every heartbeat and call meanwhile.
        await asyncio.to_thread(lambda: (self.rt.router, self.rt.tokens, self.rt.artifacts,
                                          [system_prompt(r) for r in self.rt.settings.processing.roles]))
        await self.toolboxes.start()  # before the first assignment: a role's tools are fixed from here
        await super().on_start()
        self.add_future(self._heartbeat())

    async def on_stop(self) -> None:
        await super().on_stop()
        await self.toolboxes.aclose()  # after the work: a stdio MCP server's process ends with the worker

    # --- StatusWorker ----------------------------------------------------------------------

    def send_event(self, topic: str, record: str, value: dict[str, Any], key: str) -> None:
        self.produce(topic, self.rt.codec.encode(record, value, topic), key.encode(), tracked=False,
                     headers=headers_for(value))

    def send_tombstone(self, topic: str, key: str) -> None:
        self.produce(topic, None, key.encode(), tracked=False)

    async def flush(self, timeout_s: float) -> None:
        if self.producer is not None:
            await asyncio.to_thread(self.producer.flush, timeout_s)

    def begin_drain(self) -> None:
        """Take no new assignment from now on (a drain broadcast; the process's clean stop finishes it)."""
        self.lifecycle.drain()
        agent_status.publish(self.rt, self, self.lifecycle)

    # --- cancels ---------------------------------------------------------------------------

    def on_cancel(self, event: dict[str, Any]) -> None:
        """A cancel on the control topic: stop the matching assignments in flight, and remember it
        for the ones still queued."""
        project, task = event["project_id"], event.get("task_id")
        reason = f"{event.get('reason') or 'cancelled'} (by {event.get('requested_by') or 'unknown'})"
        self.cancels.add(project, task, reason)
        asked = to_ms(event["timestamp"])
        for (p, t), running in self.running.items():
            if p == project and (task is None or t == task):
                for cancellation in running:
                    self._cancel_asked[id(cancellation)] = asked
                    cancellation.cancel(reason)

    # --- an assignment ---------------------------------------------------------------------

    async def handle(self, msg: Message) -> None:
        started = time.perf_counter()
        a = decode_or_error(self.rt, msg.value(), "Assignment")
        if isinstance(a, SchemaError):
            await super().on_error(msg, a)
            TASKS.labels(str(msg.topic()).rsplit(".", 1)[-1], "dead_letter").inc()
            return
        if not self.lifecycle.begin(a["task_id"]):
            raise Unstarted(f"draining: {a['task_id']} is left for the next worker")
        set_processor(f"{NAME}:{a['role']}")
        # One span per attempt (GenAI's invoke_agent), a child of the dispatch that assigned it; the
        # LLM and tool calls of the attempt are its children (agents/tracing.py).
        attributes = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": a["role"],
                      "gen_ai.agent.id": self.rt.agent_id, "gen_ai.conversation.id": a["project_id"],
                      "aios.task_id": a["task_id"], "aios.attempt": a["attempt"],
                      "aios.privacy": a.get("privacy") or "normal"}
        try:
            with ids_scope(task_id=a["task_id"], project_id=a["project_id"], trace_id=a["trace_id"]), \
                    span(f"invoke_agent {a['role']}", a["trace_id"], parent_from(msg.headers()), attributes=attributes):
                await self._work(a, started)
        finally:
            self.lifecycle.end(a["task_id"])

    async def on_error(self, msg: Message, exc: Exception) -> None:
        """Dead-letter it, and tell the orchestrator the attempt failed, so it retries now rather
        than after AIOS_TASK_TIMEOUT_S."""
        await super().on_error(msg, exc)
        a = decode_or_error(self.rt, msg.value(), "Assignment")
        if isinstance(a, SchemaError):
            return
        failed = AgentOutcome(False, "", error=f"the agent failed: {type(exc).__name__}", error_type=type(exc).__name__)
        self.send(self.rt.topics.attempts, "TaskResult", result_event(a, failed, self.rt.agent_id, 0.0),
                  a["project_id"])

    def send(self, topic: str, record: str, value: dict[str, Any], key: str) -> None:
        """An output of the current assignment (its offset commits once the broker has it)."""
        self.produce(topic, self.rt.codec.encode(record, value, topic), key.encode(), headers=headers_for(value))

    async def send_acked(self, topic: str, record: str, value: dict[str, Any], key: str) -> None:
        """An output the assignment waits for the broker to have before it goes on."""
        await self.produce_acked(topic, self.rt.codec.encode(record, value, topic), key.encode())

    def tools_for(self, a: dict[str, Any], journal: Journal, cancellation: Cancellation, *,
                  writes: bool = False) -> Toolbox | None:
        """The tools of this assignment: its role's (the read-only ones and the role's MCP tools), the
        remote A2A agents its role may ask (none for a restricted task), write_artifact when it
        ``writes``, and ask_agent unless AIOS_ASK_MAX_DEPTH is 0."""
        box = self.toolboxes.for_role(a["role"])
        extra = self.tools.remote_for(a["role"], a.get("privacy") or "normal")
        if writes and self.rt.settings.llm.agent_tools:
            extra.append(WriteArtifact())
        if self.rt.settings.llm.agent_tools and self.asks.max_depth > 0:
            asker = Asker(a["project_id"], a["task_id"], a["attempt"], a["role"], a.get("privacy") or "normal",
                          a["trace_id"])
            extra.append(AskAgent(asker, self.asks, journal, cancel=cancellation, observe=count_question))
        if not extra:
            return box
        return box.with_tools(*extra) if box is not None else Toolbox(extra)

    async def _work(self, a: dict[str, Any], started: float) -> None:
        rt, key = self.rt, (a["project_id"], a["task_id"])
        try:
            a = open_assignment(rt.sealer, a)
        except SealedFieldError as exc:  # no key here: the attempt fails and says which key it needs
            outcome = AgentOutcome(False, "", error=f"this worker cannot open the task: {exc}",
                                   error_type=type(exc).__name__)
            self._emit(a, outcome, [], started)
            return
        reason = self.cancels.reason(*key)
        if reason is not None:  # cancelled while it waited on the topic: no LLM call at all
            outcome = AgentOutcome(False, "", error=f"cancelled: {reason}", error_type="cancelled")
            self.send(rt.topics.attempts, "TaskResult", result_event(a, outcome, rt.agent_id, 0.0), a["project_id"])
            CANCELLED_WORK.labels("before").inc()
            TASKS.labels(a["role"], "cancelled").inc()
            return
        self.send(rt.topics.attempts, "TaskResult", started_event(a, rt.agent_id), a["project_id"])
        cancellation = Cancellation()
        self.running.setdefault(key, []).append(cancellation)
        tokens = None
        try:
            history, summary = await read_memory(rt, rt.sealer, a)
            recalled = await recall(rt, rt.sealer, a)
            privacy = a.get("privacy") or "normal"
            task = AgentTask(
                task_id=a["task_id"], project_id=a["project_id"], role=a["role"],
                description=a["description"], attempt=a["attempt"], context=a["context"],
                history=history, summary=summary, recall=[r.text for r in recalled], privacy=privacy,
                strategy=a.get("strategy"), acceptance=a.get("acceptance") or "",
            )
            # Live tokens are plain text on a topic every reader sees: a restricted task's are not sent.
            if self.token_interval_s > 0 and privacy == "normal":
                tokens = TokenStream(a, rt.agent_id, self.token_interval_s, self._send_tokens)
            journal = RetryingJournal(journal_for(rt, rt.sealer, a))
            # A restricted task keeps nothing outside Kafka's sealed fields: no artifacts.
            save = attempt_saver(rt.artifacts, a) if privacy == "normal" else None
            async with one_at_a_time(task.project_id, task.task_id, task.attempt):
                outcome = await run_task(rt.router, task, budget(rt, a["role"]), journal=journal,
                                         tools=self.tools_for(a, journal, cancellation, writes=save is not None),
                                         search=memory_search(rt, rt.sealer, a), cancel=cancellation,
                                         fetch=output_fetcher(rt.settings, rt.codec, a["project_id"], rt.sealer,
                                                              rt.artifacts),
                                         on_delta=tokens.delta if tokens is not None else None,
                                         capture_content=capture_content(privacy),
                                         save=save, inline_bytes=rt.settings.processing.output_inline_bytes)
        finally:
            if tokens is not None:
                tokens.close()
            running = self.running.get(key, [])
            if cancellation in running:
                running.remove(cancellation)
            if not running:
                self.running.pop(key, None)
            asked = self._cancel_asked.pop(id(cancellation), None)
        if cancellation.cancelled:
            CANCELLED_WORK.labels("running").inc()
            if asked is not None:
                CANCEL_SECONDS.observe(max(0, now_ms() - asked) / 1000)
        self._emit(a, outcome, recalled, started)

    def _send_tokens(self, value: dict[str, Any]) -> None:
        topic = self.rt.topics.tokens
        self.produce(topic, self.rt.codec.encode("TokenDelta", value, topic), value["task_id"].encode(),
                     tracked=False, headers=headers_for(value))

    def _emit(self, a: dict[str, Any], outcome: AgentOutcome, recalled: list[Recall], started: float) -> None:
        rt, key = self.rt, a["task_id"]
        latency_ms = (time.perf_counter() - started) * 1000
        result = result_event(a, outcome, rt.agent_id, latency_ms, [r.id for r in recalled])
        messages = tool_messages(a, outcome, rt.agent_id)
        seal_outputs(rt.sealer, a, result, messages)
        # The attempt goes to the orchestrator (keyed by project, co-partitioned with its inputs),
        # which decides on retries and publishes the one terminal result.
        self.send(rt.topics.attempts, "TaskResult", result, a["project_id"])
        if not is_sealed(a["description"]):  # a task this worker could not open leaves no turn
            memory = memory_event(a, outcome, rt.agent_id, rt.tokens, rt.sealer)
            self.send(rt.topics.memory, "MemoryEvent", memory, a["project_id"])
        for message in messages:
            self.send(rt.topics.messages, "AgentMessage", message, key)
        TOOL_REPLAYS.inc(sum(1 for t in outcome.tools if t.replayed))
        for record, call in zip(outcome.calls, llm_call_events(a, outcome, rt.agent_id), strict=True):
            self.send(rt.topics.llm_calls, "LlmCall", call, key)
            if record.replayed:
                LLM_REPLAYS.inc()
                continue  # counted when it was paid for
            LLM_TOKENS.labels(call["provider"], call["model"], "input").inc(call["input_tokens"])
            LLM_TOKENS.labels(call["provider"], call["model"], "output").inc(call["output_tokens"])
            LLM_COST.labels(call["provider"], call["model"]).inc(call["cost_usd"])
            observe_genai_call(call["provider"], call["model"], call["input_tokens"], call["output_tokens"],
                               record.response.latency_ms / 1000)
        if output_artifact(result) is not None:
            OUTPUTS_OFFLOADED.inc()
        status = attempt_status(outcome)
        log.info("agents: attempt %d %s in %.0f ms%s", a["attempt"], status, latency_ms,
                 f": {outcome.error_type}: {outcome.error}" if not outcome.ok else "")
        current = trace.get_current_span()  # the attempt's invoke_agent span
        if current.is_recording():
            current.set_attributes({
                "aios.status": status, "aios.cost_usd": outcome.cost_usd, "aios.llm_calls": len(outcome.calls),
                "aios.tool_calls": len(outcome.tools),
                "gen_ai.usage.input_tokens": sum(c.response.usage.input_tokens for c in outcome.calls),
                "gen_ai.usage.output_tokens": sum(c.response.usage.output_tokens for c in outcome.calls)})
            if outcome.error_type:
                current.set_attribute("error.type", outcome.error_type)
        EVENTS.labels(NAME, status).inc()
        TASKS.labels(a["role"], status).inc()
        elapsed = time.perf_counter() - started
        PROCESSING.labels(NAME).observe(elapsed)
        TASK_SECONDS.labels(a["role"]).observe(elapsed)


def register(app: faust.App, rt: Runtime) -> None:
    # One control listener per process, whatever its roles; agents hear cancels through it.
    listener = ControlListener(rt)
    watcher = ResultsWatcher(rt, rt.sealer)  # answers to ask_agent questions
    rt.services.append(listener)
    rt.services.append(watcher)
    rt.services.append(AgentWorker(rt, listener, watcher))
