"""Tools an agent's model may call (function calling): a small interface and read-only tools.

A tool has a :class:`~agents.llm.base.ToolSpec` (name, description, JSON Schema arguments) and an
async ``run``. What a tool may read comes in a :class:`ToolContext` built by the worker, so tools
stay free of Kafka and of stores. A bad call (unknown tool, arguments that break the schema) is
answered with an error text the model can act on, not an exception: the model made the mistake.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from jsonschema.validators import Draft202012Validator

from aios.agents.llm.base import ToolCall, ToolSpec
from aios.schemas.artifacts import ArtifactRef
from aios.schemas.jsonlimits import MAX_JSON_DEPTH, json_depth
from aios.schemas.limits import MAX_TOOL_RESULT_CHARS, excerpt_ref

MAX_TOOL_ROUNDS = 4  # rounds of tool calls before the model must answer
PAGE_CHARS = MAX_TOOL_RESULT_CHARS - 200  # a page of a long output, with room for the line that says where it is

Search = Callable[[str, int], Awaitable[Sequence[str]]]
# (dependency task id, the reference at the end of its excerpt) -> its whole output, or None when it
# cannot be read (gone with retention, not that task's). Given by the worker, which knows where
# outputs are kept: today the attempt on Kafka; an artifact store would answer its own references.
FetchOutput = Callable[[str, str], Awaitable[str | None]]
# (artifact name, content) -> the stored artifact's reference (agents/tools_artifacts.py). Given by the
# worker, which knows the store and the attempt; raises an AiosError that the tool tells the model.
SaveArtifact = Callable[[str, str], Awaitable[ArtifactRef]]


class ToolJournal(Protocol):
    """The LLM journal's interface (agents.runner.Journal): tools with effects record their answers in it."""

    async def get(self, task_id: str, attempt: int, step: int) -> Mapping[str, Any] | None: ...

    async def put(self, task_id: str, attempt: int, step: int, record: Mapping[str, Any]) -> None: ...


@dataclass(frozen=True)
class CallSite:
    """Which tool call of which attempt runs: the LLM step that asked for it and its place among that
    step's calls. The same on every replay of the attempt, so it keys the call's journaled answer."""

    task_key: str  # project/task
    attempt: int
    step: int
    index: int

    @property
    def journal_task(self) -> str:
        return f"{self.task_key}/tool/{self.index}"

    @property
    def call_id(self) -> str:
        """An id a remote service may deduplicate by: the same on every replay."""
        return f"{self.task_key}:{self.attempt}:{self.step}:{self.index}"


@dataclass(frozen=True)
class ToolContext:
    """What tools may read for one task: its dependencies' outputs (excerpts of the long ones, with
    a reference to the whole), a memory search, and how to read a whole output; for tools with
    effects, the journal and the call's site."""

    outputs: Mapping[str, str] = field(default_factory=dict)
    search: Search | None = None
    fetch: FetchOutput | None = None
    journal: ToolJournal | None = None
    site: CallSite | None = None
    save: SaveArtifact | None = None  # write_artifact's store; None where artifacts are not offered


class Tool(Protocol):
    """``journaled`` (a class attribute, False when absent): the tool has effects or costs (a remote
    agent, an MCP server), so its answer is recorded under its :class:`CallSite` and a replay of the
    attempt reads it back instead of calling again."""

    spec: ToolSpec

    async def run(self, arguments: Mapping[str, Any], ctx: ToolContext) -> str:
        """The result the model reads; raise nothing for a bad request, say what was wrong."""
        ...


class ReadDependencyOutput:
    """The whole output of a task this one depends on (the prompt carries a trimmed copy, and a long
    output reaches the worker as an excerpt with a reference to the whole), a page at a time."""

    spec = ToolSpec(
        "read_dependency_output",
        "Read the full output of a task this task depends on, by its task id; a long output comes in "
        "pages: pass the offset the previous page names to read on.",
        {"type": "object", "required": ["task_id"], "additionalProperties": False,
         "properties": {"task_id": {"type": "string", "description": "The dependency's task id."},
                        "offset": {"type": "integer", "minimum": 0, "description": "Character to start at."}}},
    )

    async def run(self, arguments: Mapping[str, Any], ctx: ToolContext) -> str:
        task_id = arguments["task_id"]
        if task_id not in ctx.outputs:
            known = ", ".join(sorted(ctx.outputs)) or "none"
            return f"error: {task_id!r} is not a dependency of this task; dependencies: {known}"
        text = ctx.outputs[task_id]
        ref = excerpt_ref(text)
        if ref is not None and ctx.fetch is not None:
            whole = await ctx.fetch(task_id, ref)
            if whole is not None:
                text = whole
        start = int(arguments.get("offset", 0))
        page = PAGE_CHARS
        if start == 0 and len(text) <= page:
            return text
        end = min(start + page, len(text))
        more = f"; call again with offset={end} for more" if end < len(text) else ""
        return f"[characters {start}-{end} of {len(text)}{more}]\n{text[start:end]}"


class SearchMemory:
    """The project's memories most relevant to a query."""

    spec = ToolSpec(
        "search_memory",
        "Search the project's memory (earlier turns and summaries) for what is relevant to a query.",
        {"type": "object", "required": ["query"], "additionalProperties": False,
         "properties": {"query": {"type": "string", "minLength": 1},
                        "top_k": {"type": "integer", "minimum": 1, "maximum": 10}}},
    )

    async def run(self, arguments: Mapping[str, Any], ctx: ToolContext) -> str:
        if ctx.search is None:
            return "error: memory search is not available on this worker"
        hits = await ctx.search(arguments["query"], int(arguments.get("top_k", 3)))
        if not hits:
            return "no memory matches the query"
        return "\n\n".join(f"[{i + 1}] {hit}" for i, hit in enumerate(hits))


class Toolbox:
    """Tools by name: their specs for the request, and running the calls the model makes."""

    def __init__(self, tools: Sequence[Tool]) -> None:
        self._tools = {t.spec.name: t for t in tools}
        self._validators = {t.spec.name: Draft202012Validator(dict(t.spec.parameters)) for t in tools}

    def with_tools(self, *more: Tool) -> Toolbox:
        """These tools and ``more`` (a task's own tools, such as ask_agent), reusing the compiled schemas."""
        box = Toolbox([])
        box._tools = {**self._tools, **{t.spec.name: t for t in more}}
        box._validators = {**self._validators,
                           **{t.spec.name: Draft202012Validator(dict(t.spec.parameters)) for t in more}}
        return box

    def extended(self, tools: Sequence[Tool]) -> Toolbox:
        """These tools and ``tools`` (a later one replaces an earlier one of the same name)."""
        return Toolbox([*self._tools.values(), *tools])

    def specs(self) -> tuple[ToolSpec, ...]:
        return tuple(t.spec for t in self._tools.values())

    async def run(self, call: ToolCall, ctx: ToolContext) -> str:
        tool = self._tools.get(call.name)
        if tool is None:
            return f"error: no tool {call.name!r}; tools: {', '.join(self._tools)}"
        if json_depth(call.arguments, stop_above=MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
            # Checked before the schema: jsonschema and its messages recurse into the value.
            return f"error: bad arguments for {call.name}: nested deeper than {MAX_JSON_DEPTH} levels"
        problems = [e.message for e in self._validators[call.name].iter_errors(dict(call.arguments))]
        if problems:
            return f"error: bad arguments for {call.name}: {'; '.join(problems)}"
        journal = ctx.journal if getattr(tool, "journaled", False) else None
        site = ctx.site
        if journal is not None and site is not None:
            recorded = await journal.get(site.journal_task, site.attempt, site.step)
            if recorded is not None:
                return str(recorded["text"])
        result = await tool.run(call.arguments, ctx)
        if len(result) > MAX_TOOL_RESULT_CHARS:
            result = result[:MAX_TOOL_RESULT_CHARS] + f"\n… [{len(result) - MAX_TOOL_RESULT_CHARS} characters cut]"
        if journal is not None and site is not None:
            # Recorded before the model reads it: a replay gives the next step the same answer.
            await journal.put(site.journal_task, site.attempt, site.step,
                              {"text": result, "tool": call.name, "tool_calls": []})
        return result


def read_only_tools() -> Toolbox:
    """The tools every agent gets: read a dependency's output, search memory."""
    return Toolbox([ReadDependencyOutput(), SearchMemory()])
