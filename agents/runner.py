"""An agent's task logic, free of Kafka: build the prompt, route the calls, check the contract.

The stream processor in ``streams`` feeds it tasks and turns outcomes into events; keeping it pure
lets it be tested with the offline provider or a fake OpenAI server.

Every LLM call is a numbered *step* of one (task, attempt). With a :class:`Journal`, each answer
is recorded under (task, attempt, step) before anything is produced, and a replay of the same
attempt reads it back instead of calling (and paying for) the LLM again. The tool calls a step asks
for are journaled the same way (an MCP server's tool may act on the world), by their index in it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any, Protocol

from aios.agents.cancellation import Cancellation
from aios.agents.errors import LLMError, TaskCancelledError
from aios.agents.llm.base import ChatMessage, ChatRequest, ChatResponse, Provider, ToolCall, Usage
from aios.agents.llm.router import Route, Routed, Router, Strategy
from aios.agents.roles import Role, load_roles
from aios.agents.tools import (
    MAX_TOOL_ROUNDS,
    CallSite,
    FetchOutput,
    SaveArtifact,
    Search,
    Toolbox,
    ToolContext,
)
from aios.agents.tracing import chat_span, describe_call, describe_tool, tool_span
from aios.schemas.artifacts import MAX_ARTIFACTS, OUTPUT_ARTIFACT, ArtifactRef, TooManyArtifactsError
from aios.schemas.errors import AiosError, UnavailableError
from aios.schemas.limits import MAX_ERROR_CHARS, MAX_OUTPUT_BYTES, cut, cut_utf8, excerpt, utf8_len

# Budgets in characters (~4 per token) keep a prompt well inside small context windows even when
# dependency outputs are long; the newest context is kept, the oldest dropped first.
DESCRIPTION_BUDGET = 4_000
ACCEPTANCE_BUDGET = 1_000
DEPENDENCY_BUDGET = 2_000
HISTORY_BUDGET = 3_000
TOTAL_BUDGET = 12_000
# Tokens allowed for each join between separately counted parts of a prompt.
JOIN_MARGIN = 2
INVALID_OUTPUT = "invalid_output"  # the error_type of an answer that broke its role's contract
CANCELLED = "cancelled"  # the error_type of an attempt stopped by a cancel
# Told each piece of an answer as it streams: (step, text delta). Called from the event loop, so
# it must not block.
DeltaSink = Callable[[int, str], None]
# The error_type of an answer over MAX_OUTPUT_BYTES that could not go to the artifact store (a
# restricted task, or no store given): a result must fit in a Kafka message with room to spare.
OUTPUT_TOO_LARGE = "output_too_large"


@dataclass(frozen=True)
class AgentTask:
    """One unit of work for an agent of ``role``, with what it may read."""

    task_id: str
    project_id: str
    role: str
    description: str
    attempt: int = 1
    context: Mapping[str, str] = field(default_factory=dict)  # dependency task id -> its output
    history: Sequence[str] = ()  # recent turns from the rolling context window, oldest first
    summary: str = ""  # the running summary of turns folded out of the window
    recall: Sequence[str] = ()  # texts recalled from vector memory, best first
    privacy: str = "normal"  # "restricted" keeps every call on local deployments
    strategy: str | None = None  # overrides the role's routing strategy for this task
    acceptance: str = ""  # how the task will be judged done (a sprint's review checks it)


@dataclass(frozen=True)
class TokenBudget:
    """A role's prompt budget in tokens, and how to count them (agents/ knows no tokenizer)."""

    tokens: int
    count: Callable[[str], int]
    truncate: Callable[[str, int], str]


@dataclass(frozen=True)
class CallRecord:
    """One LLM call of a task attempt: its answer and how the router obtained it."""

    step: int
    response: ChatResponse
    deployment: str
    strategy: str
    cost_usd: float
    fallback_chain: tuple[str, ...]
    replayed: bool = False  # read back from the journal: no LLM was called this time
    redacted: bool = False  # the prompt's PII was masked for a remote model
    queue_ms: float = 0.0  # how long the router waited for a deployment to have room

    def to_record(self) -> dict[str, Any]:
        """A JSON-ready form for the journal."""
        r = self.response
        return {
            "step": self.step, "text": r.text, "provider": r.provider, "model": r.model,
            "input_tokens": r.usage.input_tokens, "output_tokens": r.usage.output_tokens,
            "cached_input_tokens": r.usage.cached_input_tokens, "latency_ms": r.latency_ms,
            "ttft_ms": r.ttft_ms, "offline": r.offline, "deployment": self.deployment,
            "strategy": self.strategy, "cost_usd": self.cost_usd, "fallback_chain": list(self.fallback_chain),
            "redacted": self.redacted, "queue_ms": self.queue_ms,
            "tool_calls": [{"id": c.id, "name": c.name, "arguments": dict(c.arguments)} for c in r.tool_calls],
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> CallRecord:
        usage = Usage(int(record["input_tokens"]), int(record["output_tokens"]),
                      int(record.get("cached_input_tokens", 0)))
        response = ChatResponse(
            text=str(record["text"]), provider=str(record["provider"]), model=str(record["model"]),
            usage=usage, latency_ms=float(record["latency_ms"]),
            ttft_ms=None if record.get("ttft_ms") is None else float(record["ttft_ms"]),
            offline=bool(record.get("offline", False)),
            tool_calls=tuple(ToolCall(str(c["id"]), str(c["name"]), dict(c["arguments"]))
                             for c in record.get("tool_calls", ())),
        )
        return cls(int(record["step"]), response, str(record["deployment"]), str(record["strategy"]),
                   float(record["cost_usd"]), tuple(record.get("fallback_chain", ())), replayed=True,
                   redacted=bool(record.get("redacted", False)), queue_ms=float(record.get("queue_ms", 0.0)))


class Journal(Protocol):
    """Where LLM answers (and tool results) are recorded by (task, attempt, step) so a replay never
    pays, or acts, twice."""

    async def get(self, task_id: str, attempt: int, step: int) -> Mapping[str, Any] | None: ...

    async def put(self, task_id: str, attempt: int, step: int, record: Mapping[str, Any]) -> None: ...


_TOOL_CALL_ID: ContextVar[str | None] = ContextVar("aios_tool_call_id", default=None)


def current_tool_call_id() -> str | None:
    """The id of the tool call running in this task, ``<call id of its step>:<index>``: the same on
    every replay, so a tool that acts on the world can pass it on as an idempotency key (the MCP
    tools send it in ``_meta``, for servers that keep what they did by it)."""
    return _TOOL_CALL_ID.get()


def tool_journal_key(project_id: str, task_id: str, index: int) -> str:
    """The task part of a tool call's journal key: the ``index``-th tool call of a step. '#' is never in
    an id (schemas/limits.py ID_PATTERN), so no task's LLM key can be a tool call's."""
    return f"{project_id}/{task_id}#tool{index}"


def call_id(project_id: str, task_id: str, attempt: int, step: int) -> str:
    """The id of one LLM call: the same on every replay of the same (task, attempt, step). Plan
    task ids are unique only within their project, so the project is part of it."""
    return f"{project_id}/{task_id}:{attempt}:{step}"


@dataclass(frozen=True)
class ToolRecord:
    """A tool the model called at ``step``, and what it read back."""

    step: int
    call: ToolCall
    result: str
    replayed: bool = False  # read back from the journal: the tool was not called this time


@dataclass(frozen=True)
class AgentOutcome:
    """What came of a task: an output, or an error with its type name for retry decisions."""

    ok: bool
    output: str
    error: str | None = None
    response: ChatResponse | None = None  # the last answer
    error_type: str | None = None
    cost_usd: float = 0.0  # from the model catalogue's prices and the calls' real usage
    calls: tuple[CallRecord, ...] = ()  # every LLM call of the attempt, by step
    tools: tuple[ToolRecord, ...] = ()  # every tool call, in order
    artifacts: tuple[ArtifactRef, ...] = ()  # files the attempt wrote (write_artifact, an oversized output)


@cache  # the persona and the contract's JSON are fixed per role: built once, not per task
def system_prompt(role: str) -> str:
    """The system prompt for an agent of ``role`` (its persona and, if any, its contract)."""
    return load_roles().get(role).system_prompt()


def build_request(task: AgentTask, *, max_tokens: int = 1024, budget: TokenBudget | None = None) -> ChatRequest:
    """The chat request for ``task``.

    Its user message is trimmed to fixed character budgets and, with ``budget``, the whole prompt
    (system + user) to the role's token budget: memory (recall, summary, recent turns) gets what
    the task and its dependencies leave, the newest turns first.
    """
    system = system_prompt(task.role)
    head = [f"Task: {_trim(task.description, DESCRIPTION_BUDGET)}"]
    if task.acceptance.strip():
        head.append(f"Acceptance criterion (the work is judged done against it): "
                    f"{_trim(task.acceptance, ACCEPTANCE_BUDGET)}")
    if task.context:
        outputs = [f"[{dep}]\n{_trim(out, DEPENDENCY_BUDGET)}" for dep, out in sorted(task.context.items())]
        head.append("Outputs of the tasks this depends on:\n" + "\n\n".join(outputs))
    if budget is None:
        memory = _memory_sections(task, len, HISTORY_BUDGET)
        user = _trim("\n\n".join(head + memory), TOTAL_BUDGET)
    else:
        user = _within_tokens(system, head, task, budget)
    return ChatRequest(
        messages=(ChatMessage("system", system), ChatMessage("user", user)),
        max_tokens=max_tokens,
        response_schema=load_roles().get(task.role).contract,
        metadata={
            "task_id": task.task_id,
            "project_id": task.project_id,
            "role": task.role,
            "attempt": str(task.attempt),
        },
    )


def _memory_sections(task: AgentTask, size: Callable[[str], int], room: int) -> list[str]:
    """Recall, summary and the newest turns that fit ``room`` (in ``size`` units), in that order.

    A section's title is paid for before its items, so the sections together never exceed ``room``.
    """
    sections: list[str] = []
    for title, items in (("Relevant memories (best first):", list(task.recall)),
                         ("Summary of earlier context:", [task.summary] if task.summary else [])):
        if not items:
            continue
        left = room - size(title)
        kept = []
        for item in items:
            if size(item) > left:
                break
            kept.append(item)
            left -= size(item)
        if kept:
            sections.append("\n".join([title, *kept]))
            room = left
    title = "Recent context (oldest first):"
    recent = _newest_within(task.history, max(room - size(title), 0), size)
    if recent:
        sections.append("\n".join([title, *recent]))
    return sections


def _within_tokens(system: str, head: list[str], task: AgentTask, budget: TokenBudget) -> str:
    # Fast path: every token spans at least one character, so a prompt with no more characters
    # than the budget has tokens fits without counting.
    everything = "\n\n".join(head + _memory_sections(task, len, 1 << 30))
    if len(system) + len(everything) + 16 <= budget.tokens:
        return everything
    # Count parts, never the assembled prompt: the recent turns repeat from task to task, so their
    # counts come from the counter's cache, while re-encoding the whole prompt (as this once did)
    # was half of the agent's CPU. Joining parts with whitespace adds no token for a tokenizer that
    # splits on whitespace (WordPiece, and tiktoken's pre-split within a token or so), so the sum
    # plus JOIN_MARGIN per part bounds the prompt; a property test checks it with the real tokenizer.
    room = budget.tokens - budget.count(system) - JOIN_MARGIN
    task_text = "\n\n".join(head)
    task_tokens = budget.count(task_text)
    if task_tokens > room:
        task_text = budget.truncate(task_text, max(room, 0))
        task_tokens = min(task_tokens, max(room, 0))
    room -= task_tokens + JOIN_MARGIN
    sections = _memory_sections(task, lambda text: budget.count(text) + JOIN_MARGIN, room)
    return "\n\n".join([task_text, *sections])


async def run_task(
    llm: Provider | Router, task: AgentTask, budget: TokenBudget | None = None, *, journal: Journal | None = None,
    tools: Toolbox | None = None, search: Search | None = None, fetch: FetchOutput | None = None,
    cancel: Cancellation | None = None, on_delta: DeltaSink | None = None, capture_content: bool = False,
    save: SaveArtifact | None = None, inline_bytes: int = MAX_OUTPUT_BYTES,
) -> AgentOutcome:
    """Run ``task`` through ``llm`` (a router, or one provider), with ``tools`` the model may call
    for up to ``MAX_TOOL_ROUNDS`` rounds; check the answer against the role's contract and ask once
    more, with what was wrong, when it breaks it.

    ``cancel`` stops the attempt (the call in flight is interrupted, no further step or tool call
    starts; the outcome's error_type is ``cancelled``); ``on_delta`` is told the answer as it streams.
    Provider failures become failed outcomes; bugs propagate. ``fetch`` reads a dependency's whole
    output where the assignment carries an excerpt (the read_dependency_output tool). Each LLM call and
    tool call is a span (agents/tracing.py); ``capture_content`` puts prompts and answers on them. ``save`` keeps
    files in the artifact store (the write_artifact tool) and an output over ``inline_bytes``: the
    outcome's output is then an excerpt ending in the artifact's URI. A role with an output contract
    keeps its JSON whole in the event up to MAX_OUTPUT_BYTES, since the orchestrator parses it.
    """
    router = llm if isinstance(llm, Router) else Router.single(llm)
    tool_journal = journal  # a tool may act on the world whatever model asked for it
    if all(d.provider.offline for d in router.deployments):
        journal = None  # nothing is paid and the answer is deterministic: save the round trips
    role = load_roles().get(task.role)
    request = build_request(task, budget=budget)
    if tools is not None:
        request = replace(request, tools=tools.specs())
    steps = _Steps(router, task, role, journal, tools, ToolContext(task.context, search, fetch), cancel, on_delta,
                   tool_journal=tool_journal, capture_content=capture_content, save_to_store=save)
    if save is not None:
        steps.context = replace(steps.context, save=steps.save)
    try:
        request, call = await steps.call_with_tools(request)
        output, problem = role.validate(call.response.text)
        if problem is not None:
            correction = replace(_with_correction(request, call.response.text, problem), tools=())
            call = await steps.call(correction)
            output, problem = role.validate(call.response.text)
    except LLMError as exc:
        return steps.outcome(False, "", error=str(exc), error_type=type(exc).__name__)
    except TaskCancelledError as exc:
        return steps.outcome(False, "", error=str(exc), error_type=CANCELLED)
    if problem is not None:
        return steps.outcome(False, call.response.text, error_type=INVALID_OUTPUT,
                             error=f"the {role.name} answer broke its output contract twice; last: {problem}")
    limit = MAX_OUTPUT_BYTES if role.contract is not None else min(inline_bytes, MAX_OUTPUT_BYTES)
    if save is not None and utf8_len(output) > limit:
        try:
            ref = await steps.save(OUTPUT_ARTIFACT, output)
        except UnavailableError:
            raise  # the store's outage: the attempt runs again, its calls answered by the journal
        except AiosError:
            pass  # kept inline if it fits; over MAX_OUTPUT_BYTES, the attempt fails and says why
        else:
            output = excerpt(output, limit, ref.uri)
    return steps.outcome(True, output)


@dataclass
class _Steps:
    """The numbered LLM calls of one task attempt, journaled and replayed by step."""

    router: Router
    task: AgentTask
    role: Role
    journal: Journal | None
    tools: Toolbox | None
    context: ToolContext
    cancel: Cancellation | None = None
    on_delta: DeltaSink | None = None
    tool_journal: Journal | None = None
    capture_content: bool = False
    calls: list[CallRecord] = field(default_factory=list)
    tool_records: list[ToolRecord] = field(default_factory=list)
    save_to_store: SaveArtifact | None = None
    artifacts: dict[str, ArtifactRef] = field(default_factory=dict)  # by name: a rewrite replaces

    async def save(self, name: str, content: str) -> ArtifactRef:
        """Write an artifact of this attempt and remember its reference for the result."""
        if self.save_to_store is None:
            raise TooManyArtifactsError("this task cannot write artifacts")
        if name not in self.artifacts and len(self.artifacts) >= MAX_ARTIFACTS:
            raise TooManyArtifactsError(f"a task may write at most {MAX_ARTIFACTS} artifacts; "
                                        "rewrite one of them or put several files in one")
        ref = await self.save_to_store(name, content)
        self.artifacts[name] = ref
        return ref

    async def call_with_tools(self, request: ChatRequest) -> tuple[ChatRequest, CallRecord]:
        """Call, run the tools the model asks for, and call again until it answers."""
        call = await self.call(request)
        rounds = 0
        while call.response.tool_calls and self.tools is not None:
            results = []
            for index, tool_call in enumerate(call.response.tool_calls):
                if self.cancel is not None:
                    self.cancel.check()  # no tool call starts after a cancel
                with tool_span(tool_call) as span:
                    record = await self.run_tool(call.step, index, tool_call)
                    describe_tool(span, tool_call, record.result, capture=self.capture_content)
                self.tool_records.append(record)
                results.append(ChatMessage("tool", record.result, tool_call_id=tool_call.id))
            rounds += 1
            asked = ChatMessage("assistant", call.response.text, tool_calls=call.response.tool_calls)
            # The last round takes the tools away, so the model has to answer.
            request = replace(request, messages=(*request.messages, asked, *results),
                              tools=request.tools if rounds < MAX_TOOL_ROUNDS else ())
            call = await self.call(request)
        return request, call

    async def run_tool(self, step: int, index: int, tool_call: ToolCall) -> ToolRecord:
        """Run the ``index``-th tool call the model asked for at ``step``, or read its result back.

        A tool may act on the world (an MCP server's), so its result is journaled like an LLM answer,
        before the next step can depend on it: a replay of the attempt never calls it again. The
        record keeps the call's name and arguments, and is reused only for the same call.
        """
        assert self.tools is not None  # noqa: S101 - only called when the model was offered tools
        t = self.task
        key = tool_journal_key(t.project_id, t.task_id, index)
        asked = {"name": tool_call.name, "arguments": dict(tool_call.arguments)}
        recorded = await self.tool_journal.get(key, t.attempt, step) if self.tool_journal else None
        if recorded is not None and recorded.get("call") == asked:
            return ToolRecord(step, tool_call, str(recorded["text"]), replayed=True)
        marker = _TOOL_CALL_ID.set(f"{call_id(t.project_id, t.task_id, t.attempt, step)}:{index}")
        try:  # a task the cancel runs the call in copies the context, and the id with it
            # The site gives a remote tool an id to deduplicate by (the same on every replay).
            site = CallSite(f"{t.project_id}/{t.task_id}", t.attempt, step, index)
            running = self.tools.run(tool_call, replace(self.context, site=site))
            result = await (running if self.cancel is None else self.cancel.run(running))
        finally:
            _TOOL_CALL_ID.reset(marker)
        if self.tool_journal is not None:
            await self.tool_journal.put(key, t.attempt, step, {"text": result, "call": asked})
        return ToolRecord(step, tool_call, result)

    async def call(self, request: ChatRequest) -> CallRecord:
        with chat_span() as span:
            record = await self._call(request)
            describe_call(span, record, request.messages, max_tokens=request.max_tokens,
                          temperature=request.temperature, capture=self.capture_content)
        return record

    async def _call(self, request: ChatRequest) -> CallRecord:
        step = len(self.calls)
        t = self.task
        if self.cancel is not None:
            self.cancel.check()  # no step starts after a cancel
        # Keyed by project too: plan task ids ("t1") repeat across projects.
        task_key = f"{t.project_id}/{t.task_id}"
        recorded = await self.journal.get(task_key, t.attempt, step) if self.journal else None
        if recorded is not None:
            record = CallRecord.from_record(recorded)
        else:
            strategy = Strategy(t.strategy or self.role.strategy)
            route = Route(request, tier=self.router.cap_tier(self.role.tier), strategy=strategy,
                          privacy=t.privacy, sticky_key=t.project_id or None)
            sink = self.on_delta
            on_delta = None if sink is None else (lambda text: sink(step, text))
            answer = self.router.complete(route, on_delta=on_delta)
            routed: Routed = await (answer if self.cancel is None else self.cancel.run(answer))
            record = CallRecord(step, routed.response, routed.deployment, routed.strategy.value,
                                routed.cost_usd, routed.fallback_chain, redacted=routed.redacted,
                                queue_ms=routed.queue_ms)
            if self.journal is not None:
                # Recorded before anything is produced: a crash from here on replays, not re-pays.
                await self.journal.put(task_key, t.attempt, step, record.to_record())
        self.calls.append(record)
        return record

    def outcome(self, ok: bool, output: str, *, error: str | None = None,
                error_type: str | None = None) -> AgentOutcome:
        """The attempt's outcome, within the limits every processor checks (schemas/limits.py)."""
        size = utf8_len(output)
        if size > MAX_OUTPUT_BYTES:
            if ok:
                ok, error_type = False, OUTPUT_TOO_LARGE
                error = (f"the answer is {size} bytes of UTF-8, over the {MAX_OUTPUT_BYTES} bytes a task's output may "
                         "be; ask for a shorter one, or split the task")
            output = cut_utf8(output, MAX_OUTPUT_BYTES)  # a failed attempt's text is for reading only
        if error is not None:
            error = cut(error, MAX_ERROR_CHARS)
        last = self.calls[-1].response if self.calls else None
        cost = sum(c.cost_usd for c in self.calls)
        return AgentOutcome(ok, output, error, last, error_type, cost, tuple(self.calls), tuple(self.tool_records),
                            tuple(self.artifacts.values()))


def _with_correction(request: ChatRequest, answer: str, problem: str) -> ChatRequest:
    correction = (
        f"Your answer did not meet the output contract: {problem}. "
        "Reply again with only the corrected JSON object."
    )
    messages = (*request.messages, ChatMessage("assistant", answer), ChatMessage("user", correction))
    return replace(request, messages=messages)


def _trim(text: str, budget: int) -> str:
    if len(text) <= budget:
        return text
    keep = max(budget - 40, 0)  # room for the marker, which says how much went
    return text[:keep] + f"\n… [{len(text) - keep} characters trimmed]"


def _newest_within(turns: Sequence[str], budget: int, size: Callable[[str], int] = len) -> list[str]:
    kept: list[str] = []
    used = 0
    for turn in reversed(turns):
        cost = size(turn) + (1 if size is len else 0)  # a character budget pays for the newline
        if used + cost > budget:
            if not kept and size is len:  # the newest turn alone is too long: keep its start
                kept.append(_trim(turn, budget))
            break
        kept.append(turn)
        used += cost
    return kept[::-1]
