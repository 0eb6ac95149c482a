"""Checks of decoded events against the shared limits (``schemas/limits.py``), before anything acts.

A decoded event is schema-valid, but the schema says nothing of sizes, ranges or id characters.
Every processor calls :func:`check` on what it reads, and every producer of ours checks what it
builds, so the API, the CLI, the JSON ingress and the processors refuse exactly the same events.
A failed check raises :class:`InvalidRecordError` listing every problem; processors dead-letter
the record with that reason. A sealed field (a restricted task's content, encrypted) is held to
its text's limit, read from the ciphertext's size. Pure Python over dicts: a few microseconds per
event.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aios.schemas import limits as L
from aios.schemas.artifacts import MAX_ARTIFACTS, ref_problems
from aios.schemas.errors import InvalidRecordError
from aios.schemas.sealed import plaintext_bytes


class _Problems:
    """Collects what is wrong with one event."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def add(self, field: str, message: str) -> None:
        self.found.append(f"{field}: {message}")

    def ident(self, v: Mapping[str, Any], field: str, *, optional: bool = False) -> None:
        value = v.get(field)
        if value is None and optional:
            return
        if not L.is_id(value):
            self.add(field, f"{_show(value)} is not an id (1-{L.MAX_ID_CHARS} of A-Z a-z 0-9 . _ : -, "
                     "no '/' or control characters)")

    def role(self, v: Mapping[str, Any], field: str = "role") -> None:
        if not L.is_role(v.get(field)):
            self.add(field, f"{_show(v.get(field))} is not a role name (a-z first, then a-z 0-9 _ -, at most 40)")

    def text(self, v: Mapping[str, Any], field: str, max_chars: int, *, required: bool = False,
             optional: bool = False) -> None:
        value = v.get(field)
        if value is None and optional:
            return
        if not isinstance(value, str):
            self.add(field, "must be text")
        elif not L.within_chars(value, max_chars):
            sealed = plaintext_bytes(value)
            self.add(field, f"{len(value)} characters; at most {max_chars}" if sealed is None
                     else f"sealed, {sealed} bytes of text; at most {4 * max_chars}")
        elif required and not L.not_blank(value):
            self.add(field, "is blank; say what to do")

    def utf8(self, v: Mapping[str, Any], field: str, max_bytes: int) -> None:
        value = v.get(field)
        if not isinstance(value, str):
            self.add(field, "must be text")
        elif not L.within_bytes(value, max_bytes):
            sealed = plaintext_bytes(value)
            self.add(field, f"{sealed if sealed is not None else L.utf8_len(value)} bytes of UTF-8; at most {max_bytes}")

    def number(self, v: Mapping[str, Any], field: str, low: float, high: float, *, optional: bool = False) -> None:
        value = v.get(field)
        if value is None and optional:
            return
        if not L.finite(value, low, high):
            self.add(field, f"{_show(value)} is outside {low:g}..{high:g}")

    def integer(self, v: Mapping[str, Any], field: str, low: int, high: int) -> None:
        value = v.get(field)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.add(field, f"{_show(value)} is not an integer in {low}..{high}")

    def ids(self, v: Mapping[str, Any], field: str, max_items: int) -> None:
        values = v.get(field)
        if not isinstance(values, Sequence) or isinstance(values, str):
            self.add(field, "must be a list of ids")
            return
        if len(values) > max_items:
            self.add(field, f"{len(values)} entries; at most {max_items}")
            return
        bad = [x for x in values if not L.is_id(x)]
        if bad:
            self.add(field, f"{len(bad)} entries are not ids, e.g. {_show(bad[0])}")

    def envelope(self, v: Mapping[str, Any]) -> None:
        for field in ("event_id", "trace_id"):
            if not L.is_event_id(v.get(field)):
                self.add(field, f"{_show(v.get(field))} is not 1-{L.MAX_EVENT_ID_CHARS} printable ASCII characters")

    def raise_if_any(self, record: str) -> None:
        if self.found:
            raise InvalidRecordError(record, self.found)


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _planned(p: _Problems, t: Mapping[str, Any], prefix: str = "") -> None:
    """The fields a Task and a plan's task share."""
    sub = _Problems()
    sub.ident(t, "task_id")
    sub.role(t)
    sub.text(t, "description", L.MAX_DESCRIPTION_CHARS, required=True)
    sub.integer(t, "priority", L.MIN_PRIORITY, L.MAX_PRIORITY)
    sub.ids(t, "depends_on", L.MAX_DEPENDENCIES)
    sub.text(t, "privacy", L.MAX_PRIVACY_CHARS, optional=True)
    p.found += [prefix + problem for problem in sub.found]


def _sprint_fields(p: _Problems, t: Mapping[str, Any], prefix: str) -> None:
    """A plan task's acceptance, milestone and estimate."""
    sub = _Problems()
    sub.text(t, "acceptance", L.MAX_ACCEPTANCE_CHARS)
    if t.get("milestone"):
        sub.ident(t, "milestone")
    if "estimate_tokens" in t:
        sub.integer(t, "estimate_tokens", 0, L.MAX_ESTIMATE_TOKENS)
        sub.number(t, "estimate_seconds", 0.0, L.MAX_ESTIMATE_SECONDS)
        sub.number(t, "estimate_usd", 0.0, L.MAX_BUDGET_USD)
    p.found += [prefix + problem for problem in sub.found]


def check_task(v: Mapping[str, Any]) -> None:
    p = _Problems()
    p.envelope(v)
    p.ident(v, "project_id")
    _planned(p, v)
    p.text(v, "submitted_by", L.MAX_NAME_CHARS, optional=True)
    metadata = v.get("metadata") or {}
    if not isinstance(metadata, Mapping) or len(metadata) > L.MAX_METADATA_ENTRIES:
        p.add("metadata", f"at most {L.MAX_METADATA_ENTRIES} entries")
    elif any(not isinstance(k, str) or len(k) > L.MAX_METADATA_KEY_CHARS or not isinstance(x, str)
             or len(x) > L.MAX_METADATA_VALUE_CHARS for k, x in metadata.items()):
        p.add("metadata", f"keys of at most {L.MAX_METADATA_KEY_CHARS} characters, values of at most "
              f"{L.MAX_METADATA_VALUE_CHARS}")
    p.raise_if_any("Task")


def check_plan(v: Mapping[str, Any]) -> None:
    p = _Problems()
    p.envelope(v)
    p.ident(v, "project_id")
    p.text(v, "goal", L.MAX_GOAL_CHARS)
    p.number(v, "budget_usd", 0.0, L.MAX_BUDGET_USD, optional=True)
    p.text(v, "submitted_by", L.MAX_NAME_CHARS, optional=True)
    tasks = v.get("tasks") or []
    if len(tasks) > L.MAX_PLAN_TASKS:
        p.add("tasks", f"{len(tasks)} tasks; at most {L.MAX_PLAN_TASKS}")
    else:
        for i, t in enumerate(tasks):
            _planned(p, t, f"tasks[{i}].")
            _sprint_fields(p, t, f"tasks[{i}].")
            if len(p.found) > 20:  # enough to say what is wrong
                break
    milestones = v.get("milestones") or []
    if len(milestones) > L.MAX_MILESTONES:
        p.add("milestones", f"{len(milestones)} milestones; at most {L.MAX_MILESTONES}")
    else:
        for i, m in enumerate(milestones):
            sub = _Problems()
            sub.ident(m, "id")
            sub.text(m, "title", L.MAX_TITLE_CHARS)
            p.found += [f"milestones[{i}].{problem}" for problem in sub.found]
    if not tasks and not (isinstance(v.get("goal"), str) and L.not_blank(v["goal"])):
        p.add("tasks", "a plan needs tasks, or a goal for the planner")
    p.raise_if_any("ProjectPlan")


def check_control(v: Mapping[str, Any]) -> None:
    p = _Problems()
    p.envelope(v)
    p.ident(v, "project_id")
    p.ident(v, "task_id", optional=True)
    p.text(v, "reason", L.MAX_REASON_CHARS)
    p.text(v, "requested_by", L.MAX_NAME_CHARS, optional=True)
    p.text(v, "target", L.MAX_NAME_CHARS, optional=True)
    p.raise_if_any("Control")


def check_result(v: Mapping[str, Any]) -> None:
    """A TaskResult: an agent's attempt, or a terminal result."""
    p = _Problems()
    p.envelope(v)
    p.ident(v, "project_id")
    p.ident(v, "task_id")
    p.role(v)
    p.integer(v, "attempt", 0, L.MAX_ATTEMPT)
    p.utf8(v, "output", L.MAX_OUTPUT_BYTES)
    p.text(v, "error", L.MAX_ERROR_CHARS, optional=True)
    p.text(v, "error_type", L.MAX_NAME_CHARS, optional=True)
    for field in ("agent_id", "provider", "model"):
        p.text(v, field, L.MAX_NAME_CHARS, optional=True)
    for field in ("cost_usd", "latency_ms"):
        p.number(v, field, 0.0, 1e12)
    for field in ("input_tokens", "output_tokens"):
        p.integer(v, field, 0, 2**31 - 1)
    recall = v.get("recall") or []
    if len(recall) > L.MAX_RECALL or not all(L.is_printable(r, L.MAX_MEMORY_ID_CHARS) for r in recall):
        p.add("recall", f"at most {L.MAX_RECALL} memory ids")
    artifacts = v.get("artifacts") or []
    if len(artifacts) > MAX_ARTIFACTS:
        p.add("artifacts", f"{len(artifacts)} references; at most {MAX_ARTIFACTS}")
    else:
        problem = next((found for found in map(ref_problems, artifacts) if found is not None), None)
        if problem is not None:
            p.add("artifacts", problem)
    p.raise_if_any("TaskResult")


def check_assignment(v: Mapping[str, Any]) -> None:
    p = _Problems()
    p.envelope(v)
    p.ident(v, "project_id")
    p.ident(v, "task_id")
    p.role(v)
    p.text(v, "description", L.MAX_DESCRIPTION_CHARS, required=True)
    p.integer(v, "attempt", 1, L.MAX_ATTEMPT)
    p.integer(v, "priority", L.MIN_PRIORITY, L.MAX_PRIORITY)
    p.text(v, "privacy", L.MAX_PRIVACY_CHARS, optional=True)
    p.text(v, "strategy", L.MAX_STRATEGY_CHARS, optional=True)
    p.text(v, "acceptance", L.MAX_ACCEPTANCE_CHARS, optional=True)
    context = v.get("context") or {}
    if len(context) > L.MAX_DEPENDENCIES:
        p.add("context", f"{len(context)} entries; at most {L.MAX_DEPENDENCIES}")
    elif any(not L.is_id(k) for k in context):
        p.add("context", "keys must be the ids of the task's dependencies")
    elif sum(L.utf8_len(x) for x in context.values()) > L.MAX_CONTEXT_BYTES + len(context) * L.MAX_EXCERPT_NOTE_BYTES:
        p.add("context", f"more than {L.MAX_CONTEXT_BYTES} bytes of dependency outputs")
    p.raise_if_any("Assignment")


def check_memory(v: Mapping[str, Any]) -> None:
    p = _Problems()
    p.envelope(v)
    if not L.is_printable(v.get("memory_id"), L.MAX_MEMORY_ID_CHARS):
        p.add("memory_id", f"{_show(v.get('memory_id'))} is not 1-{L.MAX_MEMORY_ID_CHARS} printable ASCII characters")
    p.ident(v, "scope_id")
    p.ident(v, "project_id")
    p.ident(v, "task_id", optional=True)
    p.text(v, "speaker", L.MAX_NAME_CHARS)
    p.utf8(v, "content", L.MAX_MEMORY_CONTENT_BYTES)
    p.integer(v, "tokens", 0, 2**31 - 1)
    p.raise_if_any("MemoryEvent")


CHECKS: dict[str, Callable[[Mapping[str, Any]], None]] = {
    "Task": check_task, "ProjectPlan": check_plan, "Control": check_control, "TaskResult": check_result,
    "Assignment": check_assignment, "MemoryEvent": check_memory,
}


def check(record: str, value: Mapping[str, Any]) -> None:
    """Raise :class:`InvalidRecordError` when ``value`` (record ``record``, short or full name)
    breaks a limit; record types without limits of their own pass."""
    checker = CHECKS.get(record.rsplit(".", 1)[-1])
    if checker is not None:
        checker(value)
