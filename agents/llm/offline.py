"""A provider that calls no LLM: deterministic, labelled answers so the platform runs without keys.

Its answers are shaped like a real agent's (a short plan for the request) so the rest of the
pipeline has something meaningful to carry, but every answer opens with a label so nobody
mistakes it for model output.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import time
from collections.abc import Mapping
from typing import Any

from aios.agents.llm.base import ChatRequest, ChatResponse, OnDelta, Usage

OFFLINE_LABEL = "[offline provider — no LLM was called]"
# The id suffix of a sprint's re-plan step (the orchestrator names them so): the offline provider
# answers one with the contract's second example, a change to the remaining plan, so a goal
# planned in sprints runs its whole loop offline, deterministically.
REPLAN_TASK_SUFFIX = ":replan"

_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_\-]{3,}")
_STOPWORDS = frozenset(
    "task this that with from into have will should would could about their there these those "
    "what when which where while your then than them they been being also only just more most "
    "some such very each other make made using used none output outputs context recent dependency "
    "dependencies role attempt".split()
)
_MAX_SUMMARY_CHARS = 160


class OfflineProvider:
    """Deterministic stand-in for an LLM: same request, same answer, no network, microseconds."""

    name = "offline"
    offline = True

    def __init__(self, model: str = "echo") -> None:
        self.model = model

    async def complete(self, request: ChatRequest, *, on_delta: OnDelta | None = None) -> ChatResponse:
        """Build a labelled, task-shaped answer from the last user message (``on_delta`` gets it
        whole: nothing streams)."""
        started = time.perf_counter()
        text = offline_answer(request.last_user_text())
        if request.response_schema is not None:
            replan = request.metadata.get("task_id", "").endswith(REPLAN_TASK_SUFFIX)
            text = json.dumps(offline_instance(request.response_schema, text, example=1 if replan else 0))
        elapsed_ms = (time.perf_counter() - started) * 1000
        if on_delta is not None:
            on_delta(text)
        input_tokens = sum(len(m.content.split()) for m in request.messages)
        return ChatResponse(
            text=text,
            provider=self.name,
            model=self.model,
            usage=Usage(input_tokens=input_tokens, output_tokens=len(text.split())),
            latency_ms=elapsed_ms,
            ttft_ms=elapsed_ms,
            offline=True,
        )

    async def aclose(self) -> None:
        """Nothing to release."""


def offline_answer(prompt: str) -> str:
    """The offline answer for ``prompt``: label, the request restated, a plan from its key words."""
    summary = _summary(prompt)
    words = _keywords(prompt[:800])  # the request comes first; history after it is not its topic
    focus = ", ".join(words[:3]) or "the request"
    detail = ", ".join(words[3:6]) or "the details given"
    digest = hashlib.sha256(prompt.encode()).hexdigest()[:8]
    return "\n".join(
        [
            OFFLINE_LABEL,
            f"Request: {summary}",
            "Plan:",
            f"1. Pin down the scope: {focus}.",
            f"2. Work through {detail}, reusing the dependency outputs provided.",
            "3. Check the result against the request and report what was done.",
            f"(offline answer {digest}; set an LLM provider for a real one)",
        ]
    )


def _summary(prompt: str) -> str:
    first = next((line.strip() for line in prompt.splitlines() if line.strip()), "")
    first = first.removeprefix("Task:").strip() or "(empty request)"
    if len(first) > _MAX_SUMMARY_CHARS:
        first = first[: _MAX_SUMMARY_CHARS - 1].rstrip() + "…"
    return first


def _keywords(prompt: str) -> list[str]:
    seen: dict[str, None] = {}
    for match in _WORD.finditer(prompt):
        word = match.group().lower()
        if word not in _STOPWORDS:
            seen.setdefault(word, None)
    return list(seen)


def offline_instance(schema: Mapping[str, Any], answer: str, name: str = "", *, example: int = 0) -> Any:
    """A value meeting ``schema`` (the subset role contracts use), with ``answer`` in ``summary``.

    A schema with ``examples`` gets example number ``example`` (the first if it has fewer). Objects get every property they declare, arrays their ``minItems`` items, enums their first
    value; strings say they are offline, so structured output is as clearly labelled as text.
    """
    if "enum" in schema:
        return schema["enum"][0]
    if schema.get("examples"):
        # A contract's own example (the planner's: a small plan of real roles), labelled in its summary.
        examples = schema["examples"]
        example = copy.deepcopy(examples[example if example < len(examples) else 0])
        if isinstance(example, dict) and "summary" in example:
            example["summary"] = answer
        return example
    kind = schema.get("type")
    if kind == "object":
        props: Mapping[str, Any] = schema.get("properties", {})
        return {key: offline_instance(sub, answer, key) for key, sub in props.items()}
    if kind == "array":
        return [offline_instance(schema.get("items", {}), answer, name) for _ in range(schema.get("minItems", 0))]
    if kind in ("integer", "number"):
        return schema.get("minimum", 0)
    if kind == "boolean":
        return False
    return answer if name == "summary" else f"{OFFLINE_LABEL} {name or 'value'}"
