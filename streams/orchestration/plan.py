"""The plan format (`aios submit --plan plan.json`) and its validation.

A plan is a set of tasks with roles and ``depends_on`` edges, optionally grouped into milestones
(sprints, run one at a time, each reviewed and re-planned: see sprints.py). Validation rejects
unknown roles, dangling and self dependencies, duplicate ids, cycles, unknown milestones and
dependencies on a later sprint, naming the offending tasks, before anything is produced, so a
plan is never half-submitted.
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

from aios.agents.llm.offline import REPLAN_TASK_SUFFIX
from aios.schemas import limits as L
from aios.schemas.jsonlimits import JsonTooDeepError, parse_json
from aios.streams.errors import OrchestrationError


class PlanError(OrchestrationError):
    """The plan is invalid; the message lists every problem and the tasks involved."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid plan:\n  " + "\n  ".join(problems))
        self.problems = problems


TaskId = Annotated[str, Field(min_length=1, max_length=L.MAX_ID_CHARS, pattern=L.ID_PATTERN)]


def json_integer(value: object) -> object:
    """An integer as JSON Schema means it: 3 and 3.0 are, true and "3" are not (pydantic's lax int
    takes all four, its strict int refuses 3.0)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be an integer")  # pydantic reports a ValueError as a validation error
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("must be an integer")
        return int(value)
    return value


JsonInt = Annotated[int, BeforeValidator(json_integer)]


def _description_within_limit(value: str) -> str:
    # A restricted task's description may arrive sealed (AIOS_ENCRYPTION_KEY), longer than its
    # text; its limit is then the text's (schemas/limits.py: within_chars).
    if not L.within_chars(value, L.MAX_DESCRIPTION_CHARS):
        raise ValueError(f"the description is longer than {L.MAX_DESCRIPTION_CHARS} characters")
    return value


Description = Annotated[str, Field(min_length=1, pattern=L.NOT_BLANK_PATTERN, description="What the agent should do "
                                   "(not blank).", json_schema_extra={"maxLength": L.MAX_DESCRIPTION_CHARS}),
                        AfterValidator(_description_within_limit)]


MilestoneRef = Annotated[str, Field(max_length=L.MAX_ID_CHARS, pattern=r"^[A-Za-z0-9._:-]*$",
                                    description="The milestone (sprint) the task belongs to; empty: "
                                    "before the first sprint.")]


class Estimate(BaseModel):
    """What a task is expected to take; `aios status` sets the actuals beside it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tokens: JsonInt = Field(default=0, ge=0, le=L.MAX_ESTIMATE_TOKENS, description="LLM tokens, in and out.")
    seconds: float = Field(default=0.0, ge=0, le=L.MAX_ESTIMATE_SECONDS, allow_inf_nan=False,
                           description="Time in LLM calls.")
    cost_usd: float = Field(default=0.0, ge=0, le=L.MAX_BUDGET_USD, allow_inf_nan=False)


class Milestone(BaseModel):
    """A sprint: its tasks run together; at its end a review and a re-plan run before the next."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=L.MAX_ID_CHARS, pattern=L.ID_PATTERN,
                    description="Unique among the milestones and the task ids; tasks name it.")
    title: str = Field(default="", max_length=L.MAX_TITLE_CHARS, description="What the sprint delivers.")
    requires_approval: StrictBool = Field(default=False, description="The sprint waits in awaiting_approval "
                                          "until `aios approve PROJECT MILESTONE`.")


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
    milestone: MilestoneRef = ""
    estimate: Estimate | None = Field(default=None, description="Expected tokens, time and cost.")


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    project: str = Field(min_length=1, max_length=L.MAX_ID_CHARS, pattern=L.ID_PATTERN)
    tasks: tuple[PlannedTask, ...] = Field(min_length=1, max_length=L.MAX_PLAN_TASKS)
    budget_usd: float | None = Field(default=None, ge=0, le=L.MAX_BUDGET_USD, allow_inf_nan=False,
                                     description="Stop dispatching once spent.")
    milestones: tuple[Milestone, ...] = Field(default=(), max_length=L.MAX_MILESTONES,
                                              description="Sprints, in the order they run (optional).")


# The ids of the steps that close a sprint: its review and its re-plan. No task may take them.
REVIEW_SUFFIX = ":review"
REPLAN_SUFFIX = REPLAN_TASK_SUFFIX


def sprint_numbers(milestones: Iterable[Milestone]) -> dict[str, int]:
    """Milestone id -> its sprint number (1, 2, ...); tasks outside any milestone are sprint 0."""
    return {m.id: i for i, m in enumerate(milestones, start=1)}


def plan_record(plan: Plan) -> dict[str, Any]:
    """The plan's tasks and milestones as the ProjectPlan event's fields."""
    return {
        "tasks": [{"task_id": t.id, "role": t.role, "description": t.description,
                   "depends_on": list(t.depends_on), "priority": t.priority, "acceptance": t.acceptance,
                   "requires_approval": t.requires_approval, "privacy": t.privacy, "milestone": t.milestone,
                   "estimate_tokens": t.estimate.tokens if t.estimate else 0,
                   "estimate_seconds": t.estimate.seconds if t.estimate else 0.0,
                   "estimate_usd": t.estimate.cost_usd if t.estimate else 0.0} for t in plan.tasks],
        "milestones": [{"id": m.id, "title": m.title, "requires_approval": m.requires_approval}
                       for m in plan.milestones],
    }


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
    problems += _milestone_problems(plan, seen)
    if not problems:
        cycle = find_cycle({t.id: t.depends_on for t in plan.tasks})
        if cycle:
            problems.append("dependency cycle: " + " -> ".join(cycle))
    if problems:
        raise PlanError(problems)


def _milestone_problems(plan: Plan, task_ids: set[str]) -> list[str]:
    """Milestones unique and apart from task ids; tasks name known ones and need no later sprint."""
    if not plan.milestones and not any(t.milestone for t in plan.tasks):
        return []  # a plan without sprints: nothing to check (and no pass over its edges)
    problems: list[str] = []
    sprint = sprint_numbers(plan.milestones)
    if len(sprint) < len(plan.milestones):
        problems.append("milestones: duplicate ids")
    for m in plan.milestones:
        for taken in (m.id, m.id + REVIEW_SUFFIX, m.id + REPLAN_SUFFIX):
            if taken in task_ids:
                problems.append(f"task {taken!r}: the id is milestone {m.id!r}'s (or its review's or re-plan's)")
    of_task = {t.id: sprint.get(t.milestone, 0) for t in plan.tasks}
    for t in plan.tasks:
        if t.milestone and t.milestone not in sprint:
            known = ", ".join(sprint) or "none: the plan has no milestones"
            problems.append(f"task {t.id!r}: unknown milestone {t.milestone!r} (known: {known})")
            continue
        later = [d for d in t.depends_on if of_task.get(d, 0) > of_task[t.id]]
        if later:
            problems.append(f"task {t.id!r} (milestone {t.milestone or '(none)'!r}) depends on "
                            f"{', '.join(map(repr, later))} of a later milestone; a sprint needs only earlier ones")
    return problems


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
