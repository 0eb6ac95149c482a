"""Memory logic an agent needs, free of Redis and Kafka: folding old turns into a summary.

With an LLM (any ``complete(ChatRequest)`` callable: a provider or the router) the summary is the
model's. Without one it is extractive and labelled: the first sentence of each folded turn,
newest kept when the summary itself runs over its token budget.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aios.agents.errors import LLMError
from aios.agents.llm.base import ChatMessage, ChatRequest, ChatResponse

EXTRACTIVE_LABEL = "[extractive summary]"
EXTRACTIVE_SOURCE = "extractive"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_MAX_SENTENCE_CHARS = 240

CountTokens = Callable[[str], int]


def first_sentence(text: str) -> str:
    """The first non-empty sentence (or line) of ``text``, capped at a few hundred characters."""
    for part in _SENTENCE_END.split(text.strip()):
        part = part.strip()
        if part:
            return part if len(part) <= _MAX_SENTENCE_CHARS else part[: _MAX_SENTENCE_CHARS - 1] + "…"
    return ""


def summary_lines(summary: str) -> list[str]:
    """The folded sentences of an extractive summary (empty for none or a non-extractive one)."""
    if not summary.startswith(EXTRACTIVE_LABEL):
        return [summary] if summary.strip() else []
    return [line[2:] for line in summary.splitlines()[1:] if line.startswith("- ")]


def extractive_summary(previous: str, folded: Sequence[str], *, budget_tokens: int,
                       count_tokens: CountTokens) -> str:
    """Fold ``folded`` turns (oldest first) into ``previous``; the result fits ``budget_tokens``.

    The oldest sentences go first when the summary outgrows its budget: it is a running summary.
    """
    lines = summary_lines(previous) + [s for s in (first_sentence(t) for t in folded) if s]
    # Count each line once and drop from the front by the sum (WordPiece tokens of separate lines
    # add up), then confirm with one exact count of the whole text.
    costs = [count_tokens(f"- {line}") for line in lines]
    total = count_tokens(EXTRACTIVE_LABEL) + sum(costs)
    start = 0
    while start < len(lines) - 1 and total > budget_tokens:
        total -= costs[start]
        start += 1
    while True:
        text = "\n".join([EXTRACTIVE_LABEL, *(f"- {line}" for line in lines[start:])])
        if start >= len(lines) - 1 or count_tokens(text) <= budget_tokens:
            return text
        start += 1


# --- summaries from an LLM --------------------------------------------------------------------

Complete = Callable[[ChatRequest], Awaitable[ChatResponse]]
Truncate = Callable[[str, int], str]

SUMMARY_SYSTEM = (
    "You maintain the running summary of a team's shared memory. Merge the earlier summary and the "
    "turns that just left the recent-context window into one updated summary. Keep decisions, facts, "
    "names, numbers and open questions; drop pleasantries and repetition. Write plain sentences, "
    "oldest first, with no preamble."
)
_MIN_TURN_TOKENS = 16


@dataclass(frozen=True)
class Summary:
    """A folded summary and where it came from: ``source`` is ``provider:model`` or ``extractive``."""

    text: str
    source: str
    response: ChatResponse | None = None
    error: str | None = None  # why the LLM was not used, when it was configured but failed


def summary_request(previous: str, folded: Sequence[str], *, budget_tokens: int, input_tokens: int,
                    truncate: Truncate) -> ChatRequest:
    """The chat request that folds ``folded`` turns (oldest first) into ``previous``."""
    # The turns share what the earlier summary leaves of the input equally, so one huge output
    # cannot crowd out the others; the final truncation is only a guarantee.
    earlier = truncate(previous.strip(), budget_tokens) or "(none yet)"
    texts = [t.strip() for t in folded if t.strip()]
    per_turn = max((input_tokens - budget_tokens) // max(len(texts), 1), _MIN_TURN_TOKENS)
    turns = "\n".join(f"- {truncate(t, per_turn)}" for t in texts)
    user = (f"Fold these turns into the running summary, in at most {budget_tokens} tokens.\n\n"
            f"Earlier summary:\n{earlier}\n\nTurns leaving the window (oldest first):\n{turns}")
    return ChatRequest(messages=(ChatMessage("system", SUMMARY_SYSTEM),
                                 ChatMessage("user", truncate(user, input_tokens))),
                       max_tokens=budget_tokens, temperature=0.0, metadata={"purpose": "memory-summary"})


async def fold_summary(previous: str, folded: Sequence[str], *, budget_tokens: int, count_tokens: CountTokens,
                       truncate: Truncate, complete: Complete | None, input_tokens: int = 4000) -> Summary:
    """Fold ``folded`` into ``previous`` with the LLM behind ``complete``; extractive when it is None.

    An LLM failure falls back to the labelled extractive summary (recorded in ``error``): memory
    keeps folding while a provider is down, and the label says the summary is not the model's.
    The result always fits ``budget_tokens``, whatever length the model answered with.
    """
    if complete is not None:
        request = summary_request(previous, folded, budget_tokens=budget_tokens, input_tokens=input_tokens,
                                  truncate=truncate)
        try:
            response = await complete(request)
        except LLMError as exc:
            error = f"{type(exc).__name__}: {exc}"
        else:
            text = truncate(response.text.strip(), budget_tokens)
            if text and not response.offline:
                return Summary(text, f"{response.provider}:{response.model}", response)
            error = "the provider answered offline or with an empty summary"
        return Summary(extractive_summary(previous, folded, budget_tokens=budget_tokens, count_tokens=count_tokens),
                       EXTRACTIVE_SOURCE, error=error)
    return Summary(extractive_summary(previous, folded, budget_tokens=budget_tokens, count_tokens=count_tokens),
                   EXTRACTIVE_SOURCE)
