"""DAG scheduling, including property tests on random DAGs (hypothesis)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from aios.streams.orchestration.dag import TERMINAL, Limits, ProjectDag, State
from aios.streams.orchestration.plan import Plan, PlannedTask


def plan_of(edges: dict[str, tuple[str, ...]], *, roles: dict[str, str] | None = None,
            priority: dict[str, int] | None = None, approval: set[str] | None = None) -> Plan:
    return Plan(project="P", tasks=tuple(
        PlannedTask(id=k, role=(roles or {}).get(k, "backend"), description=k, depends_on=v,
                    priority=(priority or {}).get(k, 0), requires_approval=k in (approval or set()))
        for k, v in edges.items()))


def test_release_order_follows_dependencies_and_carries_outputs() -> None:
    dag = ProjectDag(plan_of({"a": (), "b": ("a",), "c": ("a",), "d": ("b", "c")}))
    assert [n.id for n in dag.take()] == ["a"]
    assert dag.take() == []
    assert {n.id for n in dag.succeeded("a", "A-out")} == {"b", "c"}
    assert {n.id for n in dag.take()} == {"b", "c"}  # independent tasks run in parallel
    dag.succeeded("b", "B-out")
    assert dag.take() == []
    dag.succeeded("c", "C-out")
    assert [n.id for n in dag.take()] == ["d"]
    assert dag.dependency_outputs("d") == {"b": "B-out", "c": "C-out"}


def test_failure_skips_transitive_dependents_with_the_reason() -> None:
    dag = ProjectDag(plan_of({"a": (), "b": ("a",), "c": ("b",), "x": ()}))
    dag.take()
    skipped = dag.failed("a", "boom")
    assert {n.id for n in skipped} == {"b", "c"}
    assert dag.nodes["c"].reason == "dependency a failed: boom"
    assert dag.nodes["x"].state is State.DISPATCHED
    dag.succeeded("x", "")
    assert dag.done


def test_priority_orders_ready_tasks_and_limits_cap_dispatch() -> None:
    dag = ProjectDag(plan_of({"lo": (), "hi": (), "mid": (), "ui": ()},
                             roles={"ui": "frontend"}, priority={"hi": 5, "mid": 1, "lo": -1}))
    assert [n.id for n in dag.take(Limits(per_project=2))] == ["hi", "mid"]
    assert dag.take(Limits(per_project=2)) == []
    dag.succeeded("hi", "")
    assert [n.id for n in dag.take(Limits(per_project=2, per_role={"backend": 1}))] == ["ui"]


def test_approval_gate_and_reject() -> None:
    dag = ProjectDag(plan_of({"a": (), "b": ("a",)}, approval={"a", "b"}))
    assert dag.nodes["a"].state is State.AWAITING_APPROVAL
    assert dag.take() == []
    assert dag.approve("a")
    assert [n.id for n in dag.take()] == ["a"]
    dag.succeeded("a", "ok")
    assert dag.nodes["b"].state is State.AWAITING_APPROVAL
    dag.reject("b", "not needed")
    assert dag.nodes["b"].state is State.FAILED and "rejected: not needed" in dag.nodes["b"].reason


def test_cancel_propagates_and_late_results_are_ignored() -> None:
    dag = ProjectDag(plan_of({"a": (), "b": ("a",)}))
    dag.take()
    changed = dag.cancel("a")
    assert {n.id: n.state for n in changed} == {"a": State.CANCELLED, "b": State.SKIPPED}
    assert dag.succeeded("a", "late") == []
    assert dag.nodes["a"].state is State.CANCELLED


def test_duplicate_results_change_nothing() -> None:
    dag = ProjectDag(plan_of({"a": (), "b": ("a",)}))
    dag.take()
    assert [n.id for n in dag.succeeded("a", "1")] == ["b"]
    assert dag.succeeded("a", "2") == []
    assert dag.nodes["a"].output == "1"


def test_critical_path_is_the_longest_unfinished_chain() -> None:
    dag = ProjectDag(plan_of({"a": (), "b": ("a",), "c": ("b",), "x": ()}))
    assert dag.critical_path() == ["a", "b", "c"]
    dag.take()
    dag.succeeded("a", "")
    assert dag.critical_path() == ["b", "c"]


@st.composite
def random_dags(draw: st.DrawFn) -> dict[str, tuple[str, ...]]:
    n = draw(st.integers(1, 40))
    edges: dict[str, tuple[str, ...]] = {}
    for i in range(n):
        # Edges only to earlier nodes: always acyclic.
        deps = draw(st.lists(st.integers(0, i - 1), max_size=min(i, 4), unique=True)) if i else []
        edges[f"t{i}"] = tuple(f"t{d}" for d in deps)
    return edges


@settings(max_examples=150, deadline=None)
@given(edges=random_dags(), seed=st.integers(0, 2**32 - 1), fail_rate=st.sampled_from([0.0, 0.1, 0.3]),
       cap=st.one_of(st.none(), st.integers(1, 5)))
def test_random_dags_respect_dependencies_and_finish(
    edges: dict[str, tuple[str, ...]], seed: int, fail_rate: float, cap: int | None
) -> None:
    rng = random.Random(seed)
    dag = ProjectDag(plan_of(edges))
    finished: dict[str, State] = {}
    running: list[str] = []
    steps = 0
    while not dag.done:
        steps += 1
        assert steps < 10 * len(edges) + 10, "scheduling made no progress"
        for node in dag.take(Limits(per_project=cap)):
            # Never started before every dependency succeeded.
            assert all(finished.get(d) is State.SUCCEEDED for d in node.depends_on)
            running.append(node.id)
        if cap is not None:
            assert len(running) <= cap
        assert running, "nothing running but the DAG is not done"
        tid = running.pop(rng.randrange(len(running)))  # results arrive in any order
        if rng.random() < fail_rate:
            dag.failed(tid, "x")
            finished[tid] = State.FAILED
        else:
            dag.succeeded(tid, f"out-{tid}")
            finished[tid] = State.SUCCEEDED
    for tid, node in dag.nodes.items():
        assert node.state in TERMINAL
        deps_ok = all(dag.nodes[d].state is State.SUCCEEDED for d in node.depends_on)
        # Every task whose dependencies all succeeded ran; the rest were skipped.
        assert (node.state in (State.SUCCEEDED, State.FAILED)) == deps_ok, tid
