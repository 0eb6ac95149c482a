"""One set of limits: the API's model, the CLI's task builder, the JSON ingress, the plan model and
the processors' checks accept exactly the same tasks (a property over hostile values), and the
helpers that keep outputs bounded keep them bounded."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from aios.api.models import ProjectIn, TaskIn
from aios.schemas import limits as L
from aios.schemas.checks import check_plan, check_result, check_task
from aios.schemas.errors import InvalidRecordError, SchemaError
from aios.schemas.events import envelope, now_ms
from aios.schemas.json_task import task_from_json
from aios.streams.orchestration.plan import PlannedTask
from aios.streams.readmodels.task_client import build_task

ROLES = ("general", "backend")
TEXTS = st.one_of(st.text(max_size=40), st.sampled_from(["", " ", "\t\n", "\x1c", "\u00a0", "\u2003", "x" * 20_000,
                                                         "x" * 20_001, "é" * 20_001, "a\x00b"]))
IDS = st.one_of(st.from_regex(r"[A-Za-z0-9._:-]{1,12}", fullmatch=True), st.text(max_size=12),
                st.sampled_from(["a/b", "a\n", "x" * 128, "x" * 129, "é", ""]))
PRIORITIES = st.one_of(st.integers(-1500, 1500), st.sampled_from([-(2**31), 2**31 - 1, True, False, 2.0, 2.5, "3", None]))


def accepted(call: Any) -> bool:
    try:
        call()
    except (ValidationError, SchemaError, ValueError, TypeError):
        return False
    return True


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(description=TEXTS, priority=PRIORITIES, project=IDS, task_id=IDS, role=st.sampled_from([*ROLES, "Bad Role"]))
def test_every_entry_point_accepts_the_same_tasks(description: str, priority: Any, project: str, task_id: str,
                                                  role: str) -> None:
    body = {"description": description, "priority": priority, "project": project, "role": role}

    def ingress(**more: Any) -> bool:
        return accepted(lambda: task_from_json(json.dumps({**body, **more}).encode(), roles=ROLES, source="t/0/0"))

    # The API and the JSON ingress (which also takes a task id, here a valid one).
    assert accepted(lambda: TaskIn.model_validate_json(json.dumps(body))) == ingress(task_id="t1")
    if isinstance(priority, bool) or not isinstance(priority, int) or not -(2**31) <= priority < 2**31:
        return  # Avro's int: what a producer can put on aios.tasks at all
    # What reaches the processors (checked there), what `aios submit` builds, what the ingress takes.
    event = {**envelope(), "task_id": task_id, "project_id": project, "role": role, "description": description,
             "priority": priority, "depends_on": [], "privacy": "normal", "submitted_by": "x", "metadata": {}}
    processors = accepted(lambda: check_task(event))
    assert accepted(lambda: build_task(description, role=role, project=project, priority=priority,
                                       task_id=task_id)) == processors
    assert ingress(task_id=task_id) == processors
    # A plan's task (the plan model, which has no project of its own) against the same check.
    planned = accepted(lambda: PlannedTask.model_validate_json(json.dumps(
        {"id": task_id, "role": role, "description": description, "priority": priority})))
    assert planned == accepted(lambda: check_task({**event, "project_id": "p"}))


@pytest.mark.parametrize(("doc", "problem"), [
    ({"project": "p"}, "give either"),
    ({"project": "p", "goal": None, "tasks": [{"id": "a", "role": "general", "description": "x"}]}, "may not be null"),
    ({"project": "p", "goal": "   "}, "pattern"),
    ({"project": "p", "goal": "g", "budget_usd": "5"}, "valid number"),
    ({"project": "p", "tasks": [{"id": "a", "role": "general", "description": "x", "requires_approval": "yes"}]},
     "valid boolean"),
    ({"project": "p", "tasks": [{"id": "a", "role": "general", "description": "x", "depends_on": ["b/c"]}]},
     "pattern"),
])
def test_the_api_refuses_what_its_schema_refuses(doc: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        ProjectIn.model_validate_json(json.dumps(doc))


def test_a_plan_event_is_checked_task_by_task_and_as_a_whole() -> None:
    task = {"task_id": "a", "role": "general", "description": "x", "depends_on": [], "priority": 0,
            "acceptance": "", "requires_approval": False, "privacy": "normal"}
    plan = {**envelope(), "project_id": "p", "goal": "", "tasks": [task], "budget_usd": None, "submitted_by": "t"}
    check_plan(plan)
    with pytest.raises(InvalidRecordError, match=r"tasks\[0\].priority: 5000"):
        check_plan({**plan, "tasks": [{**task, "priority": 5000}]})
    with pytest.raises(InvalidRecordError, match="budget_usd: nan"):
        check_plan({**plan, "budget_usd": math.nan})
    with pytest.raises(InvalidRecordError, match="a plan needs tasks, or a goal"):
        check_plan({**plan, "tasks": []})
    with pytest.raises(InvalidRecordError, match="10001 tasks; at most 10000"):
        check_plan({**plan, "tasks": [task] * 10_001})


def test_an_attempt_with_an_output_over_the_limit_or_a_cost_that_is_not_a_number_is_refused() -> None:
    result = {**envelope(), "task_id": "a", "project_id": "p", "role": "general", "attempt": 1, "status": "succeeded",
              "output": "é" * (L.MAX_OUTPUT_BYTES // 2), "error": None, "error_type": None, "agent_id": "x",
              "provider": "", "model": "", "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0, "latency_ms": 0.0,
              "submitted_at": now_ms(), "recall": []}
    check_result(result)  # exactly the limit, in UTF-8 bytes
    with pytest.raises(InvalidRecordError, match=f"{L.MAX_OUTPUT_BYTES + 2} bytes of UTF-8"):
        check_result({**result, "output": result["output"] + "é"})
    for cost in (math.nan, math.inf, -1.0):
        with pytest.raises(InvalidRecordError, match="cost_usd"):
            check_result({**result, "cost_usd": cost})


@given(text=st.text(max_size=3_000), budget=st.integers(0, 4_000), ref=st.sampled_from(["", "kafka://p.attempts/2/77"]))
def test_an_excerpt_fits_its_budget_and_names_its_whole(text: str, budget: int, ref: str) -> None:
    cut = L.excerpt(text, budget, ref)
    if L.utf8_len(text) <= budget:
        assert cut == text and L.excerpt_ref(cut) is None
        return
    tail = len(f"\n… [{len(text)} characters cut; the whole output: {ref or '(none)'}]".encode())
    assert L.utf8_len(cut) <= max(budget, tail)
    assert L.excerpt_ref(cut) == (ref or None)
    assert text.startswith(cut[: cut.rindex("\n… [")])


@given(text=st.text(max_size=500), limit=st.integers(0, 600))
def test_cut_utf8_keeps_whole_characters_within_the_limit(text: str, limit: int) -> None:
    cut = L.cut_utf8(text, limit)
    assert L.utf8_len(cut) <= limit and text.startswith(cut)
    assert cut == text or L.utf8_len(text[: len(cut) + 1]) > limit
