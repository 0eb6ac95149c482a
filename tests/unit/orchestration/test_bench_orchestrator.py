"""The orchestrator bench's DAG and its overhead arithmetic (pure)."""

from __future__ import annotations

from aios.bench.orchestrator import layered_plan, overheads
from aios.streams.orchestration.plan import validate_plan


def test_the_layered_dag_has_width_times_depth_tasks_and_two_edges_each() -> None:
    plan = layered_plan(4, 3, "general")
    validate_plan(plan, ["general"])  # acyclic, no dangling edges
    assert len(plan.tasks) == 12
    by_id = {t.id: t for t in plan.tasks}
    assert by_id["L0-0"].depends_on == ()
    assert by_id["L2-3"].depends_on == ("L1-3", "L1-0")  # wraps around the layer


def test_overhead_is_from_the_last_dependency_to_the_dispatch() -> None:
    plan = layered_plan(2, 2, "general")
    attempts = {"L0-0": 100, "L0-1": 130}
    assigned = {"L0-0": 0, "L0-1": 0, "L1-0": 137, "L1-1": 140}
    assert sorted(overheads(plan, attempts, assigned)) == [7.0, 10.0]
    # A task whose dependency never reported an attempt is left out, not counted as zero.
    assert overheads(plan, {"L0-0": 100}, assigned) == []
