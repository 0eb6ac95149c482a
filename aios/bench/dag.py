"""``aios bench dag``: the DAG walks (cycle check, plan validation, critical path, project status)
on one long dependency chain, listed both ways, and on the widest fans.

Pure: no Kafka, no stores. Each figure is the best of ``repeat`` runs. The baseline, from the same
run, is one pass that reads every task's dependencies, the least any walk over the DAG costs.
Plans are capped at 10,000 tasks; the bench builds bigger ones without that check (a project
reaches any size through standalone tasks).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aios.streams.orchestration.plan import Plan, PlannedTask, find_cycle, validate_plan
from aios.streams.orchestration.state import ProjectState

ROLE = "backend"


def shapes(tasks: int) -> dict[str, dict[str, tuple[str, ...]]]:
    """Task -> dependencies for each shape, in listing order."""
    chain: dict[str, tuple[str, ...]] = {f"t{i}": (f"t{i - 1}",) if i else () for i in range(tasks)}
    return {
        "chain": chain,
        "chain, last task first": dict(reversed(chain.items())),
        "one task, the rest its dependents": {"root": ()} | {f"w{i}": ("root",) for i in range(tasks - 1)},
        "one task depending on the rest": {f"w{i}": () for i in range(tasks - 1)}
        | {"sink": tuple(f"w{i}" for i in range(tasks - 1))},
    }


def _best_ms(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return round(best * 1000, 1)


def bench_dag(tasks: int = 100_000, repeat: int = 3) -> dict[str, Any]:
    """Milliseconds per walk and shape, with the one-pass baseline."""
    return {"tasks": tasks, "repeat": repeat,
            "shapes": {name: _figures(edges, repeat) for name, edges in shapes(tasks).items()}}


def _figures(edges: dict[str, tuple[str, ...]], repeat: int) -> dict[str, float]:
    plan = Plan.model_construct(project="bench", budget_usd=None, tasks=tuple(
        PlannedTask.model_construct(id=t, role=ROLE, description=t, depends_on=deps) for t, deps in edges.items()))
    state = ProjectState.from_plan(plan, now_ms=0)
    return {
        "one_pass_ms": _best_ms(lambda: sum(len(deps) for deps in edges.values()), repeat),
        "cycle_check_ms": _best_ms(lambda: find_cycle(edges), repeat),
        "validate_ms": _best_ms(lambda: validate_plan(plan, (ROLE,)), repeat),
        "critical_path_ms": _best_ms(state.dag.critical_path, repeat),
        "status_ms": _best_ms(lambda: state.status(now_ms=0), repeat),
    }
