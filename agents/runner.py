"""An agent's task logic, free of Kafka: build the prompt, call the provider, report the outcome.

The stream processor in ``streams`` feeds it tasks and turns outcomes into events; keeping it pure
lets it be tested with the offline provider or a fake OpenAI server.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from agents.errors import LLMError
from agents.llm.base import ChatMessage, ChatRequest, ChatResponse, Provider
from agents.llm.catalogue import cost_usd, load_catalogue

# Budgets in characters (~4 per token) keep a prompt well inside small context windows even when
# dependency outputs are long; the newest context is kept, the oldest dropped first.
DESCRIPTION_BUDGET = 4_000
DEPENDENCY_BUDGET = 2_000
HISTORY_BUDGET = 3_000
TOTAL_BUDGET = 12_000
# Tokens allowed for each join between separately counted parts of a prompt.
JOIN_MARGIN = 2


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


@dataclass(frozen=True)
class TokenBudget:
    """A role's prompt budget in tokens, and how to count them (agents/ knows no tokenizer)."""

    tokens: int
    count: Callable[[str], int]
    truncate: Callable[[str, int], str]


@dataclass(frozen=True)
class AgentOutcome:
    """What came of a task: an output, or an error with its type name for retry decisions."""

    ok: bool
    output: str
    error: str | None = None
    response: ChatResponse | None = None
    error_type: str | None = None
    cost_usd: float = 0.0  # from the model catalogue's prices and the call's real usage


def system_prompt(role: str) -> str:
    """The system prompt for an agent of ``role``."""
    return (
        f"You are the {role} agent in AIOS, a team of cooperating AI agents. "
        "Do the task you are given, using the outputs of the tasks it depends on and the recent "
        "context. Reply with the result itself, concise and complete."
    )


def build_request(task: AgentTask, *, max_tokens: int = 1024, budget: TokenBudget | None = None) -> ChatRequest:
    """The chat request for ``task``.

    Its user message is trimmed to fixed character budgets and, with ``budget``, the whole prompt
    (system + user) to the role's token budget: memory (recall, summary, recent turns) gets what
    the task and its dependencies leave, the newest turns first.
    """
    system = system_prompt(task.role)
    head = [f"Task: {_trim(task.description, DESCRIPTION_BUDGET)}"]
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


async def run_task(provider: Provider, task: AgentTask, budget: TokenBudget | None = None) -> AgentOutcome:
    """Run ``task`` on ``provider``. Provider failures become failed outcomes; bugs propagate."""
    try:
        response = await provider.complete(build_request(task, budget=budget))
    except LLMError as exc:
        return AgentOutcome(ok=False, output="", error=str(exc), error_type=type(exc).__name__)
    # The provider's own name and model: make_provider checked them against the catalogue.
    cost = cost_usd(load_catalogue().get(provider.name, provider.model), response.usage)
    return AgentOutcome(ok=True, output=response.text, response=response, cost_usd=cost)


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
