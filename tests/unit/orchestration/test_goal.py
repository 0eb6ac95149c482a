"""Goals: the one-task plan a goal starts with, and the planner's answer turned into the DAG."""

from __future__ import annotations

import json

import pytest

from aios.streams.orchestration.dag import State
from aios.streams.orchestration.goal import GOAL_TASK, goal_plan, planned_tasks
from aios.streams.orchestration.plan import PlanError
from aios.streams.orchestration.state import ProjectState, RetryPolicy

ROLES = ("planner", "backend", "qa")


def answer(*tasks: dict[str, object]) -> str:
    return json.dumps({"summary": "a plan", "tasks": list(tasks)})


def test_a_goal_starts_as_one_planner_task() -> None:
    plan = goal_plan("shop", "Build a shop", None, ROLES)
    assert [(t.id, t.role, t.description) for t in plan.tasks] == [(GOAL_TASK, "planner", "Build a shop")]


def test_a_goal_without_a_planner_role_says_how_to_add_it() -> None:
    with pytest.raises(PlanError, match=r"needs the 'planner' role.*AIOS_ROLES"):
        goal_plan("shop", "Build a shop", None, ("general",))


def test_planned_tasks_depend_on_the_plan_and_come_in_dependency_order() -> None:
    tasks = planned_tasks("shop", "Build a shop", answer(
        {"id": "test", "role": "qa", "description": "test it", "depends_on": ["build"]},
        {"id": "build", "role": "backend", "description": "build it", "extra": "ignored"},
    ), ROLES)
    assert [t.id for t in tasks] == ["build", "test"]
    assert tasks[0].depends_on == (GOAL_TASK,)
    assert tasks[1].depends_on == (GOAL_TASK, "build")


@pytest.mark.parametrize(("output", "problem"), [
    ("not json", "not JSON"),
    (json.dumps({"summary": "x"}), "no tasks list"),
    (json.dumps({"tasks": ["a string"]}), "not an object but a string"),
    (json.dumps({"tasks": [{"id": "a", "role": "qa", "description": "x", "depends_on": 7}]}),
     "depends_on is not a list of task ids but a number"),
    ("[" * 100_000 + "]" * 100_000, "nested deeper than 64 levels"),
    ('{"summary": "x", "tasks": [' + "{" + '"a": {' * 100_000, "nested deeper than 64 levels"),
    (answer({"id": "a", "role": "astronaut", "description": "fly"}), "astronaut"),
    (answer({"id": "a", "role": "qa", "description": "x", "depends_on": ["b"]},
            {"id": "b", "role": "qa", "description": "y", "depends_on": ["a"]}), "cycle"),
    (answer({"id": "a", "role": "qa", "description": "x", "depends_on": ["ghost"]}), "ghost"),
    (answer({"id": GOAL_TASK, "role": "qa", "description": "x"}), GOAL_TASK),
])
def test_an_invalid_answer_names_what_is_wrong(output: str, problem: str) -> None:
    with pytest.raises(PlanError, match=problem):
        planned_tasks("shop", "Build a shop", output, ROLES)


def test_the_state_extends_once_and_releases_tasks_after_the_plan() -> None:
    state = ProjectState.from_plan(goal_plan("shop", "Build a shop", None, ROLES), now_ms=0)
    state.goal = True
    [first] = state.dispatchable(now_ms=0)
    out = answer({"id": "build", "role": "backend", "description": "build it"},
                 {"id": "test", "role": "qa", "description": "test it", "depends_on": ["build"]})
    state.on_attempt(GOAL_TASK, first.attempt, True, out, None, 0.0, now_ms=1, policy=RetryPolicy(), rng=None)  # type: ignore[arg-type]
    tasks = planned_tasks("shop", "Build a shop", out, ROLES)
    state.extend(tasks, now_ms=1)
    state.extend(tasks, now_ms=2)  # a replayed attempt adds nothing
    assert [d.task_id for d in state.dispatchable(now_ms=2)] == ["build"]
    assert state.dag.nodes["test"].state is State.PENDING
    restored = ProjectState.from_dict(state.to_dict())
    assert restored.goal and set(restored.dag.nodes) == {GOAL_TASK, "build", "test"}


def chained_answer(n: int, *, last_first: bool) -> str:
    tasks = [{"id": f"t{i}", "role": "qa", "description": "x", "depends_on": [f"t{i - 1}"] if i else []}
             for i in range(n)]
    return answer(*(reversed(tasks) if last_first else tasks))


@pytest.mark.parametrize("last_first", [False, True])
def test_a_long_planned_chain_comes_in_dependency_order(last_first: bool) -> None:
    # 9,999 tasks and the planner task: the most a plan may hold.
    tasks = planned_tasks("shop", "Build a shop", chained_answer(9_999, last_first=last_first), ROLES)
    assert [t.id for t in tasks] == [f"t{i}" for i in range(9_999)]
