"""A 100,000-task chain (listed first to last and last to first) and 100,000-wide fans go through
every DAG walk without RecursionError: validation, the cycle check, the critical path, the project
status, failure and cancel propagation, and the state log's round trip.

Plans are capped at 10,000 tasks, so the plans here are built without pydantic's checks; a project
reaches this size for real through standalone tasks, which the last test covers. No timings are
asserted (``aios bench dag`` prints them).
"""

from __future__ import annotations

import json
import random

import pytest

from aios.schemas.limits import STATUS_MAX_PATH
from aios.streams.orchestration.dag import TERMINAL, State
from aios.streams.orchestration.entries import Rebuilder, encode_changes
from aios.streams.orchestration.plan import (
    Plan,
    PlanError,
    PlannedTask,
    find_cycle,
    parse_plan,
    validate_plan,
)
from aios.streams.orchestration.state import ProjectState, RetryPolicy

N = 100_000
ROLES = ("backend",)
POLICY = RetryPolicy(max_attempts=1)
Edges = dict[str, tuple[str, ...]]


def chain(*, last_first: bool) -> Edges:
    edges = {f"t{i}": (f"t{i - 1}",) if i else () for i in range(N)}
    return dict(reversed(edges.items())) if last_first else edges


def fan_out() -> Edges:
    """One task with N dependents."""
    return {"root": ()} | {f"w{i}": ("root",) for i in range(N)}


def fan_in() -> Edges:
    """One task depending on N tasks."""
    return {f"w{i}": () for i in range(N)} | {"sink": tuple(f"w{i}" for i in range(N))}


SHAPES = {"chain": lambda: chain(last_first=False), "chain-last-first": lambda: chain(last_first=True),
          "fan-out": fan_out, "fan-in": fan_in}
# The critical path of each shape: the first longest chain, in listing order.
CRITICAL = {"chain": [f"t{i}" for i in range(N)], "chain-last-first": [f"t{i}" for i in range(N)],
            "fan-out": ["root", "w0"], "fan-in": ["w0", "sink"]}
# A task whose failure skips the most, and how many it skips.
FIRST = {"chain": ("t0", N - 1), "chain-last-first": ("t0", N - 1), "fan-out": ("root", N), "fan-in": ("w0", 1)}
# An extra edge that closes a cycle through the whole shape, or through its widest point.
CLOSING = {"chain": ("t0", f"t{N - 1}"), "chain-last-first": ("t0", f"t{N - 1}"), "fan-out": ("root", "w0"),
           "fan-in": ("w0", "sink")}


def unchecked_plan(edges: Edges) -> Plan:
    return Plan.model_construct(project="P", budget_usd=None, tasks=tuple(
        PlannedTask.model_construct(id=t, role="backend", description=f"do {t}", depends_on=deps)
        for t, deps in edges.items()))


@pytest.fixture(scope="module", params=list(SHAPES))
def shape(request: pytest.FixtureRequest) -> tuple[str, Edges, Plan]:
    edges = SHAPES[request.param]()
    return request.param, edges, unchecked_plan(edges)


def test_validation_and_the_cycle_check(shape: tuple[str, Edges, Plan]) -> None:
    name, edges, plan = shape
    validate_plan(plan, ROLES)
    assert find_cycle(edges) is None
    task, dep = CLOSING[name]
    cyclic = edges | {task: (*edges[task], dep)}
    cycle = find_cycle(cyclic)
    assert cycle is not None and cycle[0] == cycle[-1]
    assert all(b in cyclic[a] for a, b in zip(cycle, cycle[1:], strict=False))
    closed = tuple(t.model_copy(update={"depends_on": cyclic[task]}) if t.id == task else t for t in plan.tasks)
    with pytest.raises(PlanError, match="dependency cycle"):
        validate_plan(plan.model_copy(update={"tasks": closed}), ROLES)


def test_a_plan_document_that_size_is_refused_with_a_message() -> None:
    tasks = [{"id": t, "role": "backend", "description": t, "depends_on": list(d)}
             for t, d in chain(last_first=True).items()]
    with pytest.raises(PlanError, match="at most 10000"):
        parse_plan(json.dumps({"project": "P", "tasks": tasks}), ROLES)


def test_status_failure_state_log_and_cancel(shape: tuple[str, Edges, Plan]) -> None:
    # One project through every walk in turn: building a 100,000-task state is the slow part.
    name, edges, plan = shape
    state = ProjectState.from_plan(plan, now_ms=0)
    assert state.dag.critical_path() == CRITICAL[name]
    # The status event carries a bounded prefix of it: a 100,000-task chain would not fit in a message.
    status = state.status(now_ms=1)
    assert status["critical_path"] == CRITICAL[name][:STATUS_MAX_PATH]
    if len(CRITICAL[name]) > STATUS_MAX_PATH:
        assert f"the critical path has {len(CRITICAL[name])} tasks" in " ".join(status["notes"])

    state.dispatchable(now_ms=0)
    first, skipped = FIRST[name]
    actions = state.on_attempt(first, 1, False, "", "boom", 0.0, now_ms=1, policy=POLICY, rng=random.Random(0))
    assert [f.status for f in actions.finals].count("skipped") == skipped
    assert state.dag.counts()["skipped"] == skipped

    rebuilder = Rebuilder()
    for key, value in encode_changes(state):
        rebuilder.add(key, value)
    [again] = rebuilder.states().values()
    assert again.dag.nodes == state.dag.nodes and again.meta() == state.meta()
    # Among chains of equal length the path depends on insertion order, which the log does not keep.
    assert len(again.dag.critical_path()) == len(state.dag.critical_path())

    unfinished = sum(n.state not in TERMINAL for n in state.dag.nodes.values())
    assert len(state.cancel(None, "stop").finals) == unfinished
    assert state.dag.done


def test_standalone_tasks_chained_one_by_one_make_a_project_of_any_length() -> None:
    state = ProjectState.empty("default", now_ms=0)
    for i in range(N):
        task = PlannedTask.model_construct(id=f"s{i}", role="backend", description="x",
                                           depends_on=(f"s{i - 1}",) if i else ())
        state.add_task(task, submitted_ms=i)
    assert state.dag.critical_path() == [f"s{i}" for i in range(N)]
    assert state.dag.nodes["s0"].state is State.READY
    assert len(state.cancel("s0", "stop").finals) == N
