"""``ask_agent(role, question)``: one agent asks another role and works on with its answer.

The question becomes a task of the asker's project for the answering role (its own attempts, cost
and budget, through the orchestrator), and the answer is that task's terminal result. The tool is
free of Kafka: the worker gives it an :class:`AskChannel` that submits the task and waits for its
result. The request and the answer are journaled under the asker's (task, attempt, question
number), like an LLM call, so a replay of the asker neither asks again nor pays again:

- answer journaled: the replay reads it back;
- request journaled, no answer yet (the asker's worker died while waiting): the replay waits for
  the same task's result, from where the first wait started (``mark``), and asks nothing;
- nothing journaled: the task is submitted, and only once the broker has it is the request
  journaled.

A question deeper than the depth limit, to a role this deployment does not run, or that gets no
answer in time is answered with an error text the model can act on.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aios.agents.cancellation import Cancellation
from aios.agents.llm.base import ToolSpec
from aios.agents.runner import Journal
from aios.agents.tools import ToolContext

ASK_TOOL = "ask_agent"
MAX_QUESTION_CHARS = 8_000  # a question is a task description: well inside its 20,000-character limit
# The answering task's id says how deep it is: ask-<depth>-<digest of the asker's question>. Ids
# are the orchestrator's dedup key, so the same question of the same attempt is the same task.
_ASKED_ID = re.compile(r"^ask-(\d{1,2})-[0-9a-f]{24}$")


def ask_depth(task_id: str) -> int:
    """How many questions deep a task is: 0 for a task no agent asked."""
    found = _ASKED_ID.match(task_id)
    return int(found.group(1)) if found else 0


def asked_task_id(project_id: str, task_id: str, attempt: int, index: int, depth: int) -> str:
    """The id of the task that answers question ``index`` of (project, task, attempt)."""
    digest = hashlib.sha256(f"{project_id}/{task_id}:{attempt}:{index}".encode()).hexdigest()[:24]
    return f"ask-{depth}-{digest}"


@dataclass(frozen=True)
class Asker:
    """The task that asks: where its question comes from and how deep it already is."""

    project_id: str
    task_id: str
    attempt: int
    role: str
    privacy: str = "normal"
    trace_id: str = ""

    @property
    def depth(self) -> int:
        return ask_depth(self.task_id)


@dataclass(frozen=True)
class AskRequest:
    """One question: the task that answers it (``task_id``, in the asker's project) and its role."""

    asker: Asker
    index: int
    task_id: str
    role: str
    question: str


@dataclass(frozen=True)
class Reply:
    """The answering task's terminal result."""

    status: str  # succeeded | failed | cancelled | skipped
    output: str
    error: str | None = None
    cost_usd: float = 0.0

    def for_model(self, role: str) -> str:
        if self.status == "succeeded":
            return self.output
        return f"error: the {role} agent did not answer ({self.status}): {self.error or 'no reason given'}"


class AskChannel(Protocol):
    """How a question reaches another role and its answer comes back (the worker implements it)."""

    max_depth: int
    timeout_s: float

    @property
    def roles(self) -> frozenset[str]:
        """The roles a question may go to."""
        ...

    def mark(self) -> Mapping[str, Any]:
        """Where the answers stream is now: an answer to a question asked after this is past it."""
        ...

    async def submit(self, request: AskRequest) -> None:
        """Submit the answering task; return once it is durably accepted."""
        ...

    async def answer(self, request: AskRequest, mark: Mapping[str, Any]) -> Reply:
        """Wait for the answering task's result, looking from ``mark`` on."""
        ...

    def replied(self, request: AskRequest, reply: Reply) -> None:
        """The answer arrived (recorded once, when first journaled)."""
        ...


class AskObserver(Protocol):
    """Told what each question came to (metrics): asked, replayed, answered, refused, timeout."""

    def __call__(self, role: str, outcome: str) -> None: ...


class AskAgent:
    """The ``ask_agent`` tool of one task attempt (questions are numbered in the order asked, so a
    replay, whose LLM answers come from the journal, numbers them the same)."""

    spec = ToolSpec(
        ASK_TOOL,
        "Ask an agent of another role a question and wait for its answer; it works on it as a task of "
        "this project, with its own cost. Use it when the answer needs that role's expertise.",
        {"type": "object", "required": ["role", "question"], "additionalProperties": False,
         "properties": {"role": {"type": "string", "minLength": 1, "maxLength": 40,
                                 "description": "The role to ask, e.g. reviewer or architect."},
                        "question": {"type": "string", "minLength": 1, "maxLength": MAX_QUESTION_CHARS,
                                     "description": "The question, with what the other agent needs to answer it."}}},
    )

    def __init__(self, asker: Asker, channel: AskChannel, journal: Journal | None, *,
                 cancel: Cancellation | None = None, observe: AskObserver | None = None) -> None:
        self.asker, self.channel, self.journal = asker, channel, journal
        self.cancel, self.observe = cancel, observe
        self.asked = 0

    async def run(self, arguments: Mapping[str, Any], ctx: ToolContext) -> str:
        index = self.asked
        self.asked += 1
        role, question = str(arguments["role"]), str(arguments["question"])
        a, channel = self.asker, self.channel
        depth = a.depth + 1
        if depth > channel.max_depth:
            self._saw(role, "refused_depth")
            return (f"error: ask_agent refused: this task is already {a.depth} question(s) deep and questions may "
                    f"nest {channel.max_depth} deep (AIOS_ASK_MAX_DEPTH); answer with what you know")
        if role not in channel.roles:
            self._saw(role, "refused_role")
            return f"error: no agent of role {role!r} runs here; roles: {', '.join(sorted(channel.roles))}"
        key = f"{a.project_id}/{a.task_id}"
        request = AskRequest(a, index, asked_task_id(a.project_id, a.task_id, a.attempt, index, depth), role, question)
        answered = await self.journal.get(f"{key}#answer", a.attempt, index) if self.journal else None
        if answered is not None:
            self._saw(role, "replayed")
            return str(answered["text"])
        asked = await self.journal.get(f"{key}#ask", a.attempt, index) if self.journal else None
        if asked is None:
            mark = dict(channel.mark())
            await channel.submit(request)
            if self.journal is not None:  # after the broker has the task: a record means it was asked
                await self.journal.put(f"{key}#ask", a.attempt, index,
                                       {"text": "", "task_id": request.task_id, "role": role, "mark": mark})
            self._saw(role, "asked")
        else:
            mark = dict(asked["mark"])
            self._saw(role, "resumed")
        waiting = asyncio.wait_for(channel.answer(request, mark), channel.timeout_s)
        try:
            reply = await (waiting if self.cancel is None else self.cancel.run(waiting))
        except TimeoutError:
            self._saw(role, "timeout")
            # Not journaled: a later delivery of this attempt may still find the answer.
            return (f"error: the {role} agent did not answer within {channel.timeout_s:.0f}s "
                    f"(task {request.task_id}); go on without it")
        text = reply.for_model(role)
        if self.journal is not None:
            await self.journal.put(f"{key}#answer", a.attempt, index,
                                   {"text": text, "task_id": request.task_id, "status": reply.status,
                                    "cost_usd": reply.cost_usd})
        channel.replied(request, reply)
        self._saw(role, "answered" if reply.status == "succeeded" else "failed")
        return text

    def _saw(self, role: str, outcome: str) -> None:
        if self.observe is not None:
            self.observe(role, outcome)
