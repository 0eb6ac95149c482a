"""The live view's task table: bounded per project and in all, and no project evicts another's
tasks while it holds no more than its fair share."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from aios.api.view import TaskRecord, TaskTable


def add(table: TaskTable, project: str, task: str) -> None:
    if table.get(project, task) is None:
        table.add(TaskRecord(task, project))


def test_a_project_over_its_cap_drops_only_its_own_oldest() -> None:
    table = TaskTable(per_project=3, total=100)
    for i in range(3):
        add(table, "victim", f"v{i}")
    for i in range(50):
        add(table, "flood", f"f{i}")
    assert [r.task_id for r in table.in_project("victim")] == ["v0", "v1", "v2"]
    assert [r.task_id for r in table.in_project("flood")] == ["f47", "f48", "f49"]
    assert table.size == 6 and table.by_id.keys() == {"v0", "v1", "v2", "f47", "f48", "f49"}


def test_over_the_total_the_largest_project_gives_way() -> None:
    table = TaskTable(per_project=1000, total=30)
    for i in range(3):
        add(table, "victim", f"v{i}")
    for i in range(100):  # one tenant floods through many tasks
        add(table, "flood", f"f{i}")
    assert len(table.in_project("victim")) == 3 and table.size == 30
    for p in range(20):  # ... or through many projects: the largest (flood) shrinks first
        add(table, f"p{p}", "t")
    assert len(table.in_project("victim")) == 3 and len(table.in_project("flood")) == 7 and table.size == 30


@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 40)), max_size=400),
       st.integers(1, 8), st.integers(1, 30))
@settings(max_examples=200, deadline=None)
def test_bounds_hold_and_a_project_within_its_share_keeps_its_tasks(
        adds: list[tuple[int, int]], per_project: int, total: int) -> None:
    table = TaskTable(per_project=per_project, total=total)
    for project, task in adds:
        before = {p: len(t) for p, t in table.projects.items()}
        add(table, f"p{project}", f"t{task}")
        assert table.size == sum(len(t) for t in table.projects.values()) <= total
        assert all(len(t) <= per_project for t in table.projects.values())
        for p, n in before.items():
            lost = n - len(table.projects.get(p, {}))
            # Only the project that added, or one that was the largest, ever loses a task.
            assert lost <= 0 or p == f"p{project}" or n == max(before.values())
        ids = {(p, t) for p, tasks in table.projects.items() for t in tasks}
        assert {(p, t) for t, ps in table.by_id.items() for p in ps} == ids
