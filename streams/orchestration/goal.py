"""Projects from a goal: ``aios submit --goal`` starts a project whose first task asks the planner
role for the plan; the planner's answer (its role contract: ``{"summary", "tasks": [...]}``) becomes
the rest of the project's DAG.

Pure: the orchestrator calls these while it handles the planner task's attempt. Every planned task
depends on the planner task, so each gets the plan as context, and validation is the same as for
``--plan`` (roles, dangling and self dependencies, cycles), naming the offending tasks.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from aios.schemas.jsonlimits import JsonTooDeepError, parse_json
from aios.streams.orchestration.graph import levels
from aios.streams.orchestration.plan import Milestone, Plan, PlanError, PlannedTask, parse_plan

GOAL_TASK = "plan"
PLANNER_ROLE = "planner"
_PLANNED_FIELDS = ("id", "role", "description", "depends_on", "priority", "acceptance", "milestone", "estimate")


def goal_plan(project: str, goal: str, budget_usd: float | None, roles: Iterable[str]) -> Plan:
    """The one-task plan a goal starts with; PlanError when this deployment runs no planner."""
    roles = set(roles)
    if PLANNER_ROLE not in roles:
        raise PlanError([f"a goal needs the {PLANNER_ROLE!r} role; this deployment runs "
                         f"{', '.join(sorted(roles))} (add it to AIOS_ROLES)"])
    task = PlannedTask(id=GOAL_TASK, role=PLANNER_ROLE, description=goal,
                       acceptance="A plan: tasks with roles, descriptions and depends_on edges.")
    return Plan(project=project, tasks=(task,), budget_usd=budget_usd)


def planned_tasks(project: str, goal: str, output: str, roles: Iterable[str]) -> tuple[PlannedTask, ...]:
    """The tasks of the planner's answer, each depending on the planner task, in dependency order."""
    return planned_work(project, goal, output, roles)[0]


def planned_work(project: str, goal: str, output: str,
                 roles: Iterable[str]) -> tuple[tuple[PlannedTask, ...], tuple[Milestone, ...]]:
    """The planner's answer as tasks (each depending on the planner task, in dependency order) and
    the milestones (sprints) they are grouped in, if the answer has any."""
    try:
        answer = parse_json(output)
    except json.JSONDecodeError as exc:
        raise PlanError([f"the planner's answer is not JSON: {exc}"]) from exc
    except JsonTooDeepError as exc:
        raise PlanError([f"the planner's answer is {exc}"]) from exc
    tasks = answer.get("tasks") if isinstance(answer, dict) else None
    if not isinstance(tasks, list) or not tasks:
        raise PlanError(["the planner's answer has no tasks list"])
    doc_tasks: list[dict[str, object]] = [{"id": GOAL_TASK, "role": PLANNER_ROLE, "description": goal}]
    for t in tasks:
        if not isinstance(t, dict):
            # The type, not the value: a value can be megabytes.
            raise PlanError([f"a planned task is not an object but {_json_type(t)}"])
        deps = t.get("depends_on") or []
        if not isinstance(deps, list):
            raise PlanError([f"a planned task's depends_on is not a list of task ids but {_json_type(deps)}"])
        kept = {k: t[k] for k in _PLANNED_FIELDS if k in t}
        kept["depends_on"] = [GOAL_TASK, *[d for d in deps if d != GOAL_TASK]]
        doc_tasks.append(kept)
    doc: dict[str, object] = {"project": project, "tasks": doc_tasks}
    milestones = answer.get("milestones")
    if milestones is not None:
        if not isinstance(milestones, list):
            raise PlanError([f"the planner's milestones are not a list but {_json_type(milestones)}"])
        doc["milestones"] = milestones
    plan = parse_plan(json.dumps(doc), roles)
    return _dependency_order(plan.tasks[1:]), plan.milestones


def _json_type(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def _dependency_order(tasks: tuple[PlannedTask, ...]) -> tuple[PlannedTask, ...]:
    # By level (tasks that need only the plan first, then those that need only them, ...), in the
    # answer's order within a level. Levels come from one topological pass: placing tasks round by
    # round, as this once did, was quadratic on a long chain.
    level = levels({t.id: t.depends_on for t in tasks})  # parse_plan has rejected cycles
    return tuple(t for _, t in sorted(enumerate(tasks), key=lambda it: (level[it[1].id], it[0])))
