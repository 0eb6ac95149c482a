"""The plan format (`aios submit --plan plan.json`) and its validation.

A plan is a set of tasks with roles and ``depends_on`` edges. Validation rejects unknown roles,
dangling and self dependencies, duplicate ids and cycles, naming the offending tasks, before
anything is produced, so a plan is never half-submitted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
)

from aios.schemas import limits as L
from aios.schemas.jsonlimits import JsonTooDeepError, parse_json
from aios.streams.errors import OrchestrationError


class PlanError(OrchestrationError):
    """The plan is invalid; the message lists every problem and the tasks involved."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid plan:\n  " + "\n  ".join(problems))
        self.problems = problems


TaskId = Annotated[str, Field(min_length=1, max_length=L.MAX_ID_CHARS, pattern=L.ID_PATTERN)]


def _json_integer(value: object) -> object:
    """An integer as JSON Schema means it: 3 and 3.0 are, true and "3" are not (pydantic's lax int
    takes all four, its strict int refuses 3.0)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be an integer")  # pydantic reports a ValueError as a validation error
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("must be an integer")
        return int(value)
    return value


JsonInt = Annotated[int, BeforeValidator(_json_integer)]


def _description_within_limit(value: str) -> str:
    # A restricted task's description may arrive sealed (AIOS_ENCRYPTION_KEY), longer than its
    # text; its limit is then the text's (schemas/limits.py: within_chars).
    if not L.within_chars(value, L.MAX_DESCRIPTION_CHARS):
        raise ValueError(f"the description is longer than {L.MAX_DESCRIPTION_CHARS} characters")
    return value


Description = Annotated[str, Field(min_length=1, pattern=L.NOT_BLANK_PATTERN, description="What the agent should do "
                                   "(not blank).", json_schema_extra={"maxLength": L.MAX_DESCRIPTION_CHARS}),
                        AfterValidator(_description_within_limit)]


class PlannedTask(BaseModel):
    # The limits every entry point shares (schemas/limits.py), so the API's schema states them too.
    # Strict numbers and flags: a JSON true is not the priority 1, nor "yes" an approval.
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=L.MAX_ID_CHARS, pattern=L.ID_PATTERN,
                    description="Unique within the plan; other tasks name it in depends_on.")
    role: str = Field(pattern=L.ROLE_PATTERN, description="The agent role that does the task.")
    description: Description
    depends_on: tuple[TaskId, ...] = Field(default=(), max_length=L.MAX_DEPENDENCIES,
                                          description="Ids of tasks that must succeed first.")
    priority: JsonInt = Field(default=0, ge=L.MIN_PRIORITY, le=L.MAX_PRIORITY,
                                description="Higher runs first among ready tasks.")
    acceptance: str = Field(default="", max_length=L.MAX_ACCEPTANCE_CHARS, description="How to tell the task is done.")
    requires_approval: StrictBool = Field(default=False, description="Wait in awaiting_approval before dispatch.")
    privacy: Literal["normal", "restricted"] = Field(
        default="normal", description="restricted: only local models see the task (and its prompt).")


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    project: str = Field(min_length=1, max_length=L.MAX_ID_CHARS, pattern=L.ID_PATTERN)
    tasks: tuple[PlannedTask, ...] = Field(min_length=1, max_length=L.MAX_PLAN_TASKS)
    budget_usd: float | None = Field(default=None, ge=0, le=L.MAX_BUDGET_USD, allow_inf_nan=False,
                                     description="Stop dispatching once spent.")


def plan_json_schema() -> dict[str, Any]:
    """The JSON Schema of the plan format (documented in the README)."""
    return Plan.model_json_schema()


def parse_plan(text: str, roles: Iterable[str]) -> Plan:
    """Parse and validate a plan document; raise PlanError listing every problem."""
    try:
        raw = parse_json(text)
    except json.JSONDecodeError as exc:
        raise PlanError([f"not JSON: {exc}"]) from exc
    except JsonTooDeepError as exc:
        raise PlanError([f"{exc}: a plan is an object with a list of flat task objects"]) from exc
    try:
        plan = Plan.model_validate(raw)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise PlanError(problems) from exc
    validate_plan(plan, roles)
    return plan


def validate_plan(plan: Plan, roles: Iterable[str]) -> None:
    known_roles = set(roles)
    problems: list[str] = []
    ids = [t.id for t in plan.tasks]
    seen: set[str] = set()
    for task_id in ids:
        if task_id in seen:
            problems.append(f"task {task_id!r}: duplicate id")
        seen.add(task_id)
    for t in plan.tasks:
        if t.role not in known_roles:
            problems.append(f"task {t.id!r}: unknown role {t.role!r} (known: {', '.join(sorted(known_roles))})")
        for dep in t.depends_on:
            if dep == t.id:
                problems.append(f"task {t.id!r}: depends on itself")
            elif dep not in seen:
                problems.append(f"task {t.id!r}: depends on unknown task {dep!r}")
    if not problems:
        cycle = find_cycle({t.id: t.depends_on for t in plan.tasks})
        if cycle:
            problems.append("dependency cycle: " + " -> ".join(cycle))
    if problems:
        raise PlanError(problems)


def find_cycle(edges: dict[str, tuple[str, ...]]) -> list[str] | None:
    """A cycle as a path (first node repeated at the end), or None; iterative, no recursion limit."""
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(edges, white)
    for root in edges:
        if color[root] != white:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = []
        color[root] = grey
        path.append(root)
        while stack:
            node, i = stack[-1]
            deps = edges.get(node, ())
            if i < len(deps):
                stack[-1] = (node, i + 1)
                dep = deps[i]
                if color.get(dep, black) == grey:
                    return [*path[path.index(dep):], dep]
                if color.get(dep, black) == white:
                    color[dep] = grey
                    path.append(dep)
                    stack.append((dep, 0))
            else:
                color[node] = black
                path.pop()
                stack.pop()
    return None
