"""State entries: writing only what each event changed, then folding the log, rebuilds the live state.

The orchestrator logs a project as one entry per project and per task, and writes only the
entries an event touched. If a transition forgot to mark what it changed, a restart would come
back with a stale task; these tests drive random event sequences and compare the rebuilt state
with the live one after every step.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aios.streams.orchestration.dag import Limits
from aios.streams.orchestration.entries import Rebuilder, encode_changes, entry_key
from aios.streams.orchestration.plan import Plan, PlannedTask
from aios.streams.orchestration.state import ProjectState, RetryPolicy

POLICY = RetryPolicy(max_attempts=2, base_ms=10, max_ms=100, jitter=0.0)


def rebuilt(log: dict[bytes, bytes | None]) -> ProjectState:
    rebuilder = Rebuilder()
    for key, value in log.items():
        rebuilder.add(key, value)
    [state] = rebuilder.states().values()
    return state


def snapshot(state: ProjectState) -> dict[str, Any]:
    doc = state.to_dict()
    doc["nodes"] = sorted(doc["nodes"], key=lambda n: n["id"])
    return doc


def assert_indexed(state: ProjectState) -> None:
    """The by-state index the scheduler reads agrees with every node's own state."""
    dag = state.dag
    assert {s: ids for s, ids in dag.by_state.items() if ids} == {
        s: {n.id for n in dag.nodes.values() if n.state is s} for s in {n.state for n in dag.nodes.values()}}
    waiting = {n.id for n in dag.nodes.values() if n.retry_at_ms is not None and n.state.value == "pending"}
    assert waiting <= dag.retrying
    assert {n.id for n in dag.nodes.values() if n.state.value == "ready"} <= {tid for _, tid in dag.ready_heap}


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    n = draw(st.integers(1, 8))
    tasks = []
    for i in range(n):
        deps = draw(st.sets(st.integers(0, i - 1), max_size=2)) if i else set()
        tasks.append(PlannedTask(id=f"t{i}", role="general", description=f"task {i}",
                                 depends_on=tuple(f"t{d}" for d in sorted(deps)), priority=draw(st.integers(0, 2)),
                                 requires_approval=draw(st.booleans()) and i % 3 == 0))
    return Plan(project="P", tasks=tuple(tasks), budget_usd=draw(st.sampled_from([None, 0.05])))


@settings(max_examples=150, deadline=None)
@given(plans(), st.lists(st.tuples(st.sampled_from(["ok", "fail", "cancel", "approve", "reject", "add", "tick"]),
                                   st.integers(0, 9)), max_size=40), st.integers(0, 2**16))
def test_logged_changes_rebuild_the_live_state(plan: Plan, events: list[tuple[str, int]], seed: int) -> None:
    rng = random.Random(seed)
    now = 0
    state = ProjectState.from_plan(plan, now_ms=now)
    log: dict[bytes, bytes | None] = {}
    limits = Limits(per_project=2) if seed % 2 else Limits(per_project=3, per_role={"general": 1})

    def write() -> None:
        # A concurrency cap keeps ready tasks back, so some are taken by a later, unrelated event.
        state.dispatchable(now_ms=now, limits=limits)
        state.archive_finished_standalone()
        log.update(encode_changes(state))
        again = rebuilt(log)
        assert snapshot(again) == snapshot(state)
        assert_indexed(state)
        assert_indexed(again)

    write()
    for kind, i in events:
        now += 7
        tid = f"t{i}"
        node = state.dag.nodes.get(tid)
        if kind in ("ok", "fail") and node is not None:
            state.on_attempt(tid, node.attempts, kind == "ok", f"out {i}", "boom", 0.01, now_ms=now,
                             policy=POLICY, rng=rng)
        elif kind == "cancel":
            state.cancel(tid if node is not None and i % 2 else None, "stop")
        elif kind == "approve" and node is not None:
            state.approve(tid)
        elif kind == "reject":
            state.reject(tid, "no")
        elif kind == "add":
            state.add_task(PlannedTask(id=f"s{i}", role="general", description="standalone",
                                       depends_on=(tid,) if node is not None and i % 2 else ()), submitted_ms=now)
        write()


def test_an_archived_standalone_task_leaves_a_tombstone() -> None:
    state = ProjectState.empty("default", now_ms=0)
    state.add_task(PlannedTask(id="x", role="general", description="x"), submitted_ms=0)
    state.dispatchable(now_ms=0)
    log = dict(encode_changes(state))
    assert log[entry_key("default", "x")] is not None
    state.on_attempt("x", 1, True, "done", None, 0.0, now_ms=1, policy=POLICY, rng=random.Random(0))
    state.archive_finished_standalone()
    changes = dict(encode_changes(state))
    assert changes[entry_key("default", "x")] is None
    log.update(changes)
    again = rebuilt(log)
    assert "x" not in again.dag.nodes and again.archived == {"succeeded": 1}
    assert encode_changes(state) == [(entry_key("default"), changes[entry_key("default")])]  # nothing else changed


def test_task_entries_without_their_project_entry_are_dropped() -> None:
    rebuilder = Rebuilder()
    rebuilder.add(entry_key("P", "a"), b'{"id": "a"}')
    assert rebuilder.states() == {}


def test_a_corrupt_entry_is_a_clear_error() -> None:
    rebuilder = Rebuilder()
    with pytest.raises(ValueError, match="the state entry b'P' is not JSON"):
        rebuilder.add(entry_key("P"), b"not json")


def test_a_finished_project_archived_keeps_only_its_counts() -> None:
    plan = Plan(project="P", tasks=(PlannedTask(id="a", role="general", description="a"),
                                    PlannedTask(id="b", role="general", description="b", depends_on=("a",))))
    state = ProjectState.from_plan(plan, now_ms=0)
    rng = random.Random(0)
    for tid in ("a", "b"):
        state.dispatchable(now_ms=0)
        state.on_attempt(tid, 1, True, f"{tid} done", None, 0.01, now_ms=1, policy=POLICY, rng=rng)
    log = dict(encode_changes(state))
    state.finished_ms = 5
    state.archive_all()
    changes = dict(encode_changes(state))
    assert changes[entry_key("P", "a")] is None and changes[entry_key("P", "b")] is None
    log.update(changes)
    again = rebuilt(log)
    assert again.dag.nodes == {} and again.finished_ms == 5
    status = again.status(now_ms=10)
    assert status["state"] == "succeeded" and status["counts"]["succeeded"] == 2 and status["percent_done"] == 100.0
    assert again.cost_usd == 0.02
