"""Plan validation: every problem named, nothing accepted half-valid."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aios.streams.orchestration.plan import PlanError, find_cycle, parse_plan, plan_json_schema

ROLES = ("planner", "backend", "frontend", "qa")


def doc(*tasks: dict[str, object], project: str = "P") -> str:
    return json.dumps({"project": project, "tasks": list(tasks)})


def t(tid: str, role: str = "backend", deps: tuple[str, ...] = (), **kw: object) -> dict[str, object]:
    return {"id": tid, "role": role, "description": f"do {tid}", "depends_on": list(deps), **kw}


def test_the_minimal_format_from_the_issue_is_accepted() -> None:
    plan = parse_plan(doc(t("b"), t("a", deps=("b",), priority=0)), ROLES)
    assert [x.id for x in plan.tasks] == ["b", "a"]
    assert plan.tasks[1].depends_on == ("b",)


@pytest.mark.parametrize(
    ("tasks", "expected"),
    [
        ((t("a", role="astronaut"),), "task 'a': unknown role 'astronaut'"),
        ((t("a", deps=("zz",)),), "task 'a': depends on unknown task 'zz'"),
        ((t("a", deps=("a",)),), "task 'a': depends on itself"),
        ((t("a"), t("a")), "task 'a': duplicate id"),
        ((t("a", deps=("c",)), t("b", deps=("a",)), t("c", deps=("b",))), "dependency cycle: a -> c -> b -> a"),
    ],
)
def test_invalid_plans_name_the_offending_tasks(tasks: tuple[dict[str, object], ...], expected: str) -> None:
    with pytest.raises(PlanError) as err:
        parse_plan(doc(*tasks), ROLES)
    assert expected in str(err.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(PlanError) as err:
        parse_plan(doc(t("a", role="x"), t("b", deps=("nope",))), ROLES)
    assert len(err.value.problems) == 2


@pytest.mark.parametrize(
    "text",
    ["not json", "[]", json.dumps({"project": "P", "tasks": []}), json.dumps({"project": "P"}),
     doc(t("a", extra_field=1)), doc(t("a"), project="has space"), doc({"id": "a", "role": "qa"})],
)
def test_malformed_documents_are_plan_errors(text: str) -> None:
    with pytest.raises(PlanError):
        parse_plan(text, ROLES)


def test_find_cycle_handles_deep_chains_without_recursion() -> None:
    n = 5000
    edges = {str(i): (str(i + 1),) for i in range(n)} | {str(n): ()}
    assert find_cycle(edges) is None
    edges[str(n)] = ("0",)
    cycle = find_cycle(edges)
    assert cycle is not None and cycle[0] == cycle[-1] and len(cycle) == n + 2


def test_json_schema_describes_the_format() -> None:
    schema = plan_json_schema()
    assert set(schema["required"]) == {"project", "tasks"}
    task = schema["$defs"]["PlannedTask"]
    assert set(task["required"]) == {"id", "role", "description"}
    assert "depends_on" in task["properties"]


def test_the_documented_schema_file_matches_the_model() -> None:
    from pathlib import Path

    documented = json.loads((Path(__file__).resolve().parents[3] / "docs" / "plan.schema.json").read_text())
    assert documented == plan_json_schema(), "regenerate docs/plan.schema.json from streams.orchestration.plan"


def nested(depth: int, leaf: str = '"x"') -> str:
    return "[" * depth + leaf + "]" * depth


def with_raw(document: dict[str, object], raw: str) -> str:
    """``document`` as JSON with its "@RAW@" value replaced by the text ``raw`` (too deep to dump)."""
    return json.dumps(document).replace('"@RAW@"', raw, 1)


@pytest.mark.parametrize("text", [
    nested(100_000),  # the whole file
    with_raw({"project": "P", "tasks": [t("a", description="@RAW@")]}, nested(100_000)),
    with_raw({"project": "P", "tasks": "@RAW@"}, nested(100_000, json.dumps(t("a")))),
    '{"project": "P", "tasks": [' * 50_000,  # deep and never closed
])
def test_a_deeply_nested_plan_file_is_refused_with_a_message(text: str) -> None:
    with pytest.raises(PlanError) as err:
        parse_plan(text, ROLES)
    assert "nested deeper than 64 levels" in str(err.value)


@settings(max_examples=100, deadline=None)
@given(field=st.sampled_from(["id", "role", "description", "depends_on", "priority", "acceptance", "extra"]),
       depth=st.integers(1, 3000), wide=st.integers(0, 2000))
def test_deep_or_wide_values_in_any_field_are_plan_errors(field: str, depth: int, wide: int) -> None:
    task = t("a") | {field: "@RAW@"}
    with pytest.raises(PlanError):
        parse_plan(with_raw({"project": "P", "tasks": [task]}, nested(depth, json.dumps(["x"] * wide))), ROLES)
