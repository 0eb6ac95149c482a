"""Memory logic an agent needs, free of Redis and Kafka: folding old turns into a summary.

Without an LLM the summary is extractive and labelled: the first sentence of each folded turn,
newest kept when the summary itself runs over its token budget.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

EXTRACTIVE_LABEL = "[extractive summary]"
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
