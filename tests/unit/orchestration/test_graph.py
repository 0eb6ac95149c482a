"""The iterative DAG walks agree with simple recursive references on small random graphs.

The references are the obvious recursive definitions (the critical path is the code this module's
walks replaced); they are fine here because hypothesis keeps the graphs small.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from aios.streams.orchestration.dag import TERMINAL, Node, ProjectDag, State
from aios.streams.orchestration.goal import GOAL_TASK, _dependency_order
from aios.streams.orchestration.graph import levels, topological_order
from aios.streams.orchestration.plan import Plan, PlannedTask, find_cycle

Edges = dict[str, tuple[str, ...]]


@st.composite
def dags(draw: st.DrawFn, max_size: int = 30) -> Edges:
    """Acyclic: edges only go to earlier tasks, then the listing order is shuffled."""
    n = draw(st.integers(1, max_size))
    edges: Edges = {}
    for i in range(n):
        # Duplicates allowed: nothing in the plan format forbids listing a dependency twice.
        deps = draw(st.lists(st.integers(0, i - 1), max_size=min(i, 4))) if i else []
        edges[f"t{i}"] = tuple(f"t{d}" for d in deps)
    order = draw(st.permutations(list(edges)))
    return {k: edges[k] for k in order}


@st.composite
def graphs(draw: st.DrawFn) -> Edges:
    """Any directed graph, cycles and self loops included, sometimes naming unknown tasks."""
    n = draw(st.integers(1, 12))
    names = [f"t{i}" for i in range(n)] + ["ghost"]
    return {f"t{i}": tuple(draw(st.lists(st.sampled_from(names), max_size=3))) for i in range(n)}


def plan_of(edges: Edges) -> Plan:
    return Plan(project="P", tasks=tuple(PlannedTask(id=k, role="backend", description=k, depends_on=v)
                                         for k, v in edges.items()))


# --- references (recursive on purpose) ------------------------------------------------------


def reference_critical_path(dag: ProjectDag) -> list[str]:
    memo: dict[str, list[str]] = {}

    def longest(tid: str) -> list[str]:
        if tid not in memo:
            node = dag.nodes[tid]
            own = [] if node.state is State.SUCCEEDED else [tid]
            best = max((longest(d) for d in node.depends_on), key=len, default=[])
            memo[tid] = best + own
        return memo[tid]

    return max((longest(t) for t in dag.nodes), key=len, default=[])


def reaches(edges: Edges, start: str, target: str, seen: set[str] | None = None) -> bool:
    """Whether a path of one or more dependency edges leads from ``start`` to ``target``."""
    seen = set() if seen is None else seen
    for d in edges.get(start, ()):
        if d == target:
            return True
        if d in edges and d not in seen:
            seen.add(d)
            if reaches(edges, d, target, seen):
                return True
    return False


def reference_blocked(edges: Edges) -> set[str]:
    """Tasks on a cycle or depending, directly or not, on a task on one."""
    on_cycle = {t for t in edges if reaches(edges, t, t)}
    return {t for t in edges if t in on_cycle or any(reaches(edges, t, c) for c in on_cycle)}


def reference_level(edges: Edges, t: str) -> int:
    known = [d for d in edges[t] if d in edges]
    return 1 + max((reference_level(edges, d) for d in known), default=-1)


def reference_dependency_order(tasks: tuple[PlannedTask, ...]) -> tuple[PlannedTask, ...]:
    # The round-by-round placement _dependency_order used before.
    placed: set[str] = {GOAL_TASK}
    ordered: list[PlannedTask] = []
    waiting = list(tasks)
    while waiting:
        ready = [t for t in waiting if set(t.depends_on) <= placed]
        ordered += ready
        placed |= {t.id for t in ready}
        waiting = [t for t in waiting if t.id not in placed]
    return tuple(ordered)


def reference_skipped(dag: ProjectDag, start: str) -> set[str]:
    """What failing ``start`` skips: dependents reached through tasks that were still waiting."""
    out: set[str] = set()

    def visit(t: str) -> None:
        for d in dag.dependents[t]:
            n = dag.nodes[d]
            if d not in out and n.state not in TERMINAL and n.state is not State.DISPATCHED:
                out.add(d)
                visit(d)

    visit(start)
    return out


# --- properties -----------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(edges=dags(), data=st.data())
def test_critical_path_matches_the_recursive_definition(edges: Edges, data: st.DataObject) -> None:
    dag = ProjectDag(plan_of(edges))
    # Any mix of succeeded tasks, consistent with the schedule or not: the path only reads states.
    for tid in data.draw(st.lists(st.sampled_from(list(edges)), unique=True)):
        dag.set_state(dag.nodes[tid], State.SUCCEEDED)
    assert dag.critical_path() == reference_critical_path(dag)


@settings(max_examples=200, deadline=None)
@given(edges=dags())
def test_topological_order_places_every_task_after_its_dependencies(edges: Edges) -> None:
    order = topological_order(edges)
    assert sorted(order) == sorted(edges)
    position = {t: i for i, t in enumerate(order)}
    assert all(position[d] < position[t] for t, deps in edges.items() for d in deps)
    assert levels(edges) == {t: reference_level(edges, t) for t in edges}


@settings(max_examples=300, deadline=None)
@given(edges=graphs())
def test_on_any_graph_only_tasks_on_or_behind_a_cycle_are_left_out(edges: Edges) -> None:
    order = topological_order(edges)
    assert len(order) == len(set(order))
    assert set(edges) - set(order) == reference_blocked(edges)
    cycle = find_cycle(edges)
    assert (cycle is not None) == any(reaches(edges, t, t) for t in edges) == (len(order) < len(edges))
    if cycle is not None:
        assert cycle[0] == cycle[-1]
        assert all(b in edges[a] for a, b in zip(cycle, cycle[1:], strict=False))


@settings(max_examples=200, deadline=None)
@given(edges=dags())
def test_planned_tasks_come_in_the_same_order_as_round_by_round_placement(edges: Edges) -> None:
    tasks = tuple(PlannedTask(id=k, role="backend", description=k, depends_on=(GOAL_TASK, *v))
                  for k, v in edges.items())
    assert _dependency_order(tasks) == reference_dependency_order(tasks)


@settings(max_examples=200, deadline=None)
@given(edges=dags(), seed=st.integers(0, 2**32 - 1))
def test_a_failure_skips_what_the_recursive_walk_reaches(edges: Edges, seed: int) -> None:
    rng = random.Random(seed)
    dag = ProjectDag(plan_of(edges))
    for _ in range(rng.randrange(len(edges) + 1)):  # run part of the DAG first
        ready = dag.take()
        if not ready:
            break
        for n in ready:
            if rng.random() < 0.7:
                dag.succeeded(n.id, "")
    start = rng.choice(list(edges))
    if dag.nodes[start].state in TERMINAL:
        return
    expected = reference_skipped(dag, start)
    changed = dag.cancel(start)
    assert {n.id for n in changed} == expected | {start}
    assert all(dag.nodes[t].state is State.SKIPPED for t in expected)


def test_a_dependency_outside_the_dag_is_ignored_not_a_crash() -> None:
    dag = ProjectDag.empty("P")
    dag.add(Node("a", "backend", 0, ()), ready=False)
    dag.add(Node("b", "backend", 0, ("a", "archived")), ready=False)
    assert dag.critical_path() == ["a", "b"]
