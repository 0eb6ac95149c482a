"""What an agent worker reads into a prompt and writes back, kept to its task's privacy.

A normal task's prompt may go to a remote model, so it gets only normal memory: the normal lane of
the project's rolling context, and recall that leaves restricted memories out. A restricted task
(local models only) also reads the restricted lane. A restricted task's query is embedded only by
the local model: with provider embeddings it gets no vector recall, and its memory search reads
the rolling context instead.

What a restricted task writes is restricted: its memory turn goes to the restricted lane, and with
``AIOS_ENCRYPTION_KEY`` its output, turn, tool messages and journaled answers are sealed
(streams/sealing.py). Sealed inputs (its description, its dependencies' outputs, its memory) are
opened here, in the one process that needs them in clear.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aios.agents.runner import AgentOutcome, Journal
from aios.agents.tools import Search
from aios.connectors.context.tokens import TokenCounter
from aios.connectors.context.windows import lane
from aios.connectors.errors import StoreUnavailableError
from aios.schemas.events import envelope
from aios.schemas.sealed import SealedFieldError, is_sealed
from aios.streams.engine.records import log
from aios.streams.engine.runtime import Runtime
from aios.streams.metrics import RESTRICTED_KEPT_LOCAL
from aios.streams.sealing import (
    RESTRICTED,
    Sealer,
    description_aad,
    is_restricted,
    journal_aad,
    memory_aad,
    message_aad,
    output_aad,
)

if TYPE_CHECKING:
    from aios.connectors.vector.base import Recall

NAME = "agents"


def turn_memory_id(project: str, task_id: str, attempt: int) -> str:
    """The memory id of a task attempt's turn: the same on every replay of that attempt, and
    distinct across projects (plan task ids repeat between projects). The ids are quoted, so no
    project or task id, whatever separators it holds, can make another's memory id."""
    return f"turn:{quote(project, safe='')}:{quote(task_id, safe='')}:{attempt}"


def open_assignment(sealer: Sealer, a: Mapping[str, Any]) -> dict[str, Any]:
    """The assignment with its description and dependency outputs opened. Raises SealedFieldError
    (the message says which key is missing) when this worker cannot open them."""
    project = a["project_id"]
    return {**a, "description": sealer.open(a["description"], description_aad(project, a["task_id"])),
            "context": {dep: sealer.open(out, output_aad(project, dep)) for dep, out in a["context"].items()}}


def _opened_turns(sealer: Sealer, turns: Sequence[Mapping[str, Any]]) -> list[tuple[int, str]]:
    out = []
    for t in turns:
        if not is_sealed(t["content"]):
            out.append((int(t.get("ts", 0)), str(t["content"])))
            continue
        try:
            out.append((int(t.get("ts", 0)), sealer.open(t["content"], memory_aad(t["project_id"], t["memory_id"]))))
        except SealedFieldError as exc:
            log.warning("agents: a sealed turn of %s is left out of the prompt: %s", t.get("project_id"), exc)
    return out


async def read_memory(rt: Runtime, sealer: Sealer, a: Mapping[str, Any]) -> tuple[list[str], str]:
    """The recent turns (oldest first) and the running summary the task's prompt may carry."""
    project = a["project_id"]
    windows = [await rt.context.read("project", project)]
    if is_restricted(a.get("privacy")):
        windows.append(await rt.context.read(lane("project", True), project))
    turns = sorted(t for w in windows for t in _opened_turns(sealer, w.turns))
    summaries = [text for w in windows if w.summary is not None
                 for _, text in _opened_turns(sealer, [w.summary])]
    return [text for _, text in turns], "\n".join(summaries)


def _vector_query_allowed(rt: Runtime, a: Mapping[str, Any]) -> bool:
    """A restricted task's text is embedded only by the local model."""
    if is_restricted(a.get("privacy")) and rt.settings.memory.embeddings != "local":
        RESTRICTED_KEPT_LOCAL.labels(NAME, "not_embedded").inc()
        return False
    return True


async def _vector_search(rt: Runtime, sealer: Sealer, a: Mapping[str, Any], query: str, top_k: int) -> list[Recall]:
    s = rt.settings
    vm = await rt.vector_memory()
    hits: list[Recall] = await rt.in_vector_thread(
        vm.search, query, top_k, project=a["project_id"], score_threshold=s.memory.recall_threshold,
        exclude_privacy=None if is_restricted(a.get("privacy")) else RESTRICTED)
    opened = []
    for hit in hits:
        if not is_sealed(hit.text):
            opened.append(hit)
            continue
        try:
            text = sealer.open(hit.text, memory_aad(str(hit.payload.get("project", "")), hit.id))
        except SealedFieldError as exc:
            log.warning("agents: a sealed memory is left out of recall: %s", exc)
            continue
        opened.append(type(hit)(hit.id, hit.score, text, hit.payload))
    return opened


async def recall(rt: Runtime, sealer: Sealer, a: Mapping[str, Any]) -> list[Recall]:
    """Top-k memories of the task's project most similar to its description (vector memory on),
    within what its privacy may read."""
    if not rt.settings.memory.vector_memory or not _vector_query_allowed(rt, a):
        return []
    try:
        return await _vector_search(rt, sealer, a, a["description"], rt.settings.memory.recall_top_k)
    except StoreUnavailableError as exc:
        # Recall improves a prompt; a Qdrant outage must not fail the task.
        log.warning("agents: recall skipped: %s", exc)
        return []


def memory_search(rt: Runtime, sealer: Sealer, a: Mapping[str, Any]) -> Search:
    """The search_memory tool's backend: vector recall when it is on (and allowed), else the words
    of the rolling context the task may read."""
    async def search(query: str, top_k: int) -> Sequence[str]:
        if rt.settings.memory.vector_memory and _vector_query_allowed(rt, a):
            try:
                return [h.text for h in await _vector_search(rt, sealer, a, query, top_k)]
            except StoreUnavailableError as exc:
                log.warning("agents: search_memory found nothing: %s", exc)  # as recall: not fatal
                return []
        words = {w for w in query.lower().split() if len(w) > 2}
        turns, _ = await read_memory(rt, sealer, a)
        scored = sorted(((sum(w in t.lower() for w in words), -i, t) for i, t in enumerate(turns)), reverse=True)
        return [t for score, _, t in scored[:top_k] if score > 0]

    return search


def memory_event(a: Mapping[str, Any], outcome: AgentOutcome, agent_id: str, tokens: TokenCounter,
                 sealer: Sealer) -> dict[str, Any]:
    """The task's turn for the project's rolling context (its restricted lane for a restricted task)."""
    turn = f"[{a['role']}] task {a['task_id']}: {a['description']}\n=> {outcome.output or outcome.error}"
    restricted = is_restricted(a.get("privacy"))
    memory_id = turn_memory_id(a["project_id"], a["task_id"], a["attempt"])
    return {
        **envelope(a["trace_id"]),
        # Derived from the attempt, so a redelivered assignment re-emits the same memory id
        # and the memory processor appends the turn only once.
        "memory_id": memory_id,
        "scope": "project",
        "scope_id": a["project_id"],
        "project_id": a["project_id"],
        "kind": "turn",
        "speaker": agent_id,
        "content": sealer.seal(turn, memory_aad(a["project_id"], memory_id)) if restricted else turn,
        "task_id": a["task_id"],
        "tokens": tokens.count(turn),
        "privacy": RESTRICTED if restricted else "normal",
    }


def seal_outputs(sealer: Sealer, a: Mapping[str, Any], result: dict[str, Any],
                 messages: list[dict[str, Any]]) -> None:
    """Seal a restricted task's output and tool messages in place (a no-op for a normal task)."""
    if not sealer.enabled or not is_restricted(a.get("privacy")):
        return
    project = a["project_id"]
    result["output"] = sealer.seal(result["output"], output_aad(project, a["task_id"]))
    for m in messages:
        m["content"] = sealer.seal(m["content"], message_aad(project, m["message_id"]))


class SealedJournal:
    """The LLM journal of a restricted task: answers (and the tool calls asked for) sealed in Redis."""

    def __init__(self, inner: Journal, sealer: Sealer) -> None:
        self.inner = inner
        self.sealer = sealer

    async def get(self, task_id: str, attempt: int, step: int) -> Mapping[str, Any] | None:
        record = await self.inner.get(task_id, attempt, step)
        if record is None or "sealed" not in record:
            return record
        try:
            opened = json.loads(self.sealer.open(record["sealed"], journal_aad(task_id, attempt, step)))
        except SealedFieldError as exc:
            # The key that sealed it is gone: the call is made again rather than the task stuck.
            log.warning("agents: a journaled answer of %s cannot be opened, calling again: %s", task_id, exc)
            return None
        return {**record, **opened}

    async def put(self, task_id: str, attempt: int, step: int, record: Mapping[str, Any]) -> None:
        secret = {"text": record["text"], "tool_calls": record.get("tool_calls", [])}
        if "call" in record:  # a tool call's name and arguments (agents/runner.py run_tool)
            secret["call"] = record["call"]
        sealed = self.sealer.seal(json.dumps(secret, ensure_ascii=False), journal_aad(task_id, attempt, step))
        clear = {k: v for k, v in record.items() if k != "call"}
        await self.inner.put(task_id, attempt, step, {**clear, "text": "", "tool_calls": [], "sealed": sealed})


def journal_for(rt: Runtime, sealer: Sealer, a: Mapping[str, Any]) -> Journal:
    """The journal a task's answers are recorded in: sealed for a restricted task when a key is set."""
    if sealer.enabled and is_restricted(a.get("privacy")):
        return SealedJournal(rt.journal, sealer)
    return rt.journal
