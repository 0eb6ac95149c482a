"""An agent's task logic, free of Kafka: build the prompt, call the provider, report the outcome.

The stream processor in ``streams`` feeds it tasks and turns outcomes into events; keeping it pure
lets it be tested with the offline provider or a fake OpenAI server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


def build_request(task: AgentTask, *, max_tokens: int = 1024) -> ChatRequest:
    """The chat request for ``task``, its user message trimmed to a fixed character budget."""
    sections = [f"Task: {_trim(task.description, DESCRIPTION_BUDGET)}"]
    if task.context:
        outputs = [f"[{dep}]\n{_trim(out, DEPENDENCY_BUDGET)}" for dep, out in sorted(task.context.items())]
        sections.append("Outputs of the tasks this depends on:\n" + "\n\n".join(outputs))
    recent = _newest_within(task.history, HISTORY_BUDGET)
    if recent:
        sections.append("Recent context (oldest first):\n" + "\n".join(recent))
    user = _trim("\n\n".join(sections), TOTAL_BUDGET)
    return ChatRequest(
        messages=(ChatMessage("system", system_prompt(task.role)), ChatMessage("user", user)),
        max_tokens=max_tokens,
        metadata={
            "task_id": task.task_id,
            "project_id": task.project_id,
            "role": task.role,
            "attempt": str(task.attempt),
        },
    )


async def run_task(provider: Provider, task: AgentTask) -> AgentOutcome:
    """Run ``task`` on ``provider``. Provider failures become failed outcomes; bugs propagate."""
    try:
        response = await provider.complete(build_request(task))
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


def _newest_within(turns: Sequence[str], budget: int) -> list[str]:
    kept: list[str] = []
    used = 0
    for turn in reversed(turns):
        if used + len(turn) > budget:
            if not kept:  # the newest turn alone is too long: keep its start rather than nothing
                kept.append(_trim(turn, budget))
            break
        kept.append(turn)
        used += len(turn) + 1
    return kept[::-1]
