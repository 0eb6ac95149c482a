"""Walks over task dependencies that need no recursion.

A plan or a project can hold one dependency chain of tens of thousands of tasks (a standalone
task may depend on the one before it, without end), far deeper than Python's stack, so every walk
here keeps its own queue.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Mapping


def topological_order(depends_on: Mapping[str, Collection[str]]) -> list[str]:
    """Every task after the tasks it depends on (Kahn's algorithm).

    ``depends_on`` maps each task to its dependencies. Ties keep the mapping's order, a dependency
    that is not a key is ignored, and tasks on a cycle, or behind one, are left out: a result
    shorter than the mapping means there is a cycle.
    """
    waiting_on = dict.fromkeys(depends_on, 0)
    dependents: dict[str, list[str]] = {}
    for task, deps in depends_on.items():
        for dep in deps:
            if dep in waiting_on:
                waiting_on[task] += 1
                dependents.setdefault(dep, []).append(task)
    queue = deque(task for task, n in waiting_on.items() if n == 0)
    order: list[str] = []
    while queue:
        task = queue.popleft()
        order.append(task)
        for dependent in dependents.get(task, ()):
            waiting_on[dependent] -= 1
            if waiting_on[dependent] == 0:
                queue.append(dependent)
    return order


def levels(depends_on: Mapping[str, Collection[str]]) -> dict[str, int]:
    """Each task's level: 0 without dependencies (among the keys), else one more than its deepest
    dependency's. Tasks on or behind a cycle have none."""
    level: dict[str, int] = {}
    for task in topological_order(depends_on):
        level[task] = 1 + max((level[d] for d in depends_on[task] if d in level), default=-1)
    return level
