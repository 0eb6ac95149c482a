"""Sprints, pure: one at a time, a review and a re-plan at each end, approvals at a boundary, an
invalid re-plan that keeps the plan, estimates against actuals, and the state log round trip."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aios.streams.orchestration.entries import Rebuilder, encode_changes
from aios.streams.orchestration.plan import PlanError, parse_plan
from aios.streams.orchestration.state import ProjectState, RetryPolicy

ROLES = {"planner", "reviewer", "backend", "qa"}
POLICY = RetryPolicy(max_attempts=2, base_ms=1, max_ms=1, jitter=0.0)
RNG = random.Random(0)


def plan_text(**extra: Any) -> str:
    return json.dumps({"project": "P", "budget_usd": 1.0, "milestones": [
        {"id": "m1", "title": "design"}, {"id": "m2", "title": "build", "requires_approval": extra.get("gate", False)}],
        "tasks": [
            {"id": "design", "role": "backend", "description": "design it", "milestone": "m1",
             "acceptance": "names every endpoint", "estimate": {"tokens": 100, "seconds": 2, "cost_usd": 0.01}},
            {"id": "schema", "role": "backend", "description": "the schema", "milestone": "m1",
             "acceptance": "one table per entity"},
            {"id": "build", "role": "backend", "description": "build it", "milestone": "m2",
             "depends_on": ["design"], "estimate": {"cost_usd": 0.02}},
            {"id": "test", "role": "qa", "description": "test it", "milestone": "m2", "depends_on": ["build"]},
        ]})


def start(**extra: Any) -> ProjectState:
    state = ProjectState.from_plan(parse_plan(plan_text(**extra), ROLES), now_ms=0)
    state.advance_sprints(now_ms=0, roles=ROLES)
    return state


def step(state: ProjectState, now: int = 1) -> list[str]:
    """Advance, then take what is ready (as the orchestrator does per event)."""
    state.advance_sprints(now_ms=now, roles=ROLES)
    return [d.task_id for d in state.dispatchable(now_ms=now)]


def finish(state: ProjectState, task_id: str, output: str = "done", ok: bool = True, error: str | None = None) -> None:
    node = state.dag.nodes[task_id]
    change = state.plan_change(task_id, output, ROLES) if ok else None
    state.on_attempt(task_id, node.attempts, ok, output, error, 0.005, now_ms=2, policy=POLICY, rng=RNG,
                     tokens=50, seconds=1.5)
    if change is not None:
        state.apply_change(task_id, change, now_ms=2)


def roundtrip(state: ProjectState) -> ProjectState:
    rebuilder = Rebuilder()
    for key, value in encode_changes(state):
        rebuilder.add(key, value)
    return rebuilder.states()["P"]


def test_one_sprint_at_a_time_then_review_then_replan_then_the_next() -> None:
    s = start()
    assert sorted(step(s)) == ["design", "schema"]  # m2 waits, though build's dependency is in m1
    [d] = [d for d in s.dispatchable(now_ms=1)] or [None]  # nothing more until m1 ends
    assert d is None
    finish(s, "design")
    assert step(s) == []
    finish(s, "schema")
    assert step(s) == ["m1:review"]
    review = s.dag.nodes["m1:review"]
    assert set(review.depends_on) == {"design", "schema"}
    assert "names every endpoint" in review.description and "one table per entity" in review.description
    s = roundtrip(s)
    finish(s, "m1:review", json.dumps({"summary": "schema is thin", "verdict": "request_changes", "comments": [],
                                       "tasks": [{"id": "design", "verdict": "approve"},
                                                 {"id": "schema", "verdict": "request_changes",
                                                  "comment": "no owner table"}]}))
    assert s.dag.nodes["schema"].review == "request_changes: no owner table"
    assert step(s) == ["m1:replan"]
    replan = s.dag.nodes["m1:replan"]
    assert replan.depends_on == ("m1:review",) and '"id": "build"' in replan.description
    finish(s, "m1:replan", json.dumps({"summary": "owners first", "tasks": [
        {"id": "owners", "role": "backend", "description": "add the owner table", "milestone": "m2",
         "depends_on": ["schema"], "estimate": {"cost_usd": 0.01}},
        {"id": "build", "role": "backend", "description": "build it on owners", "milestone": "m2",
         "depends_on": ["design", "owners"]}], "remove": ["test"]}))
    s = roundtrip(s)
    assert step(s) == ["owners"]
    status = s.status(now_ms=3)
    assert status["replans"] == [{"after": "m1", "state": "applied", "summary": "owners first", "added": ["owners"],
                                  "removed": ["test"], "changed": ["build"],
                                  "counts": {"added": 1, "removed": 1, "changed": 1}, "error": ""}]
    m1, m2 = status["sprints"]
    assert (m1["state"], m2["state"]) == ("done", "running")
    assert m1["estimate_usd"] == pytest.approx(0.01) and m1["cost_usd"] == pytest.approx(4 * 0.005)
    assert m1["tokens"] == 4 * 50 and m1["seconds"] == pytest.approx(6.0) and m1["estimate_tokens"] == 100
    assert "test" not in s.dag.nodes
    finish(s, "owners")
    assert step(s) == ["build"]
    assert s.dag.nodes["build"].description == "build it on owners"
    finish(s, "build")
    assert step(s) == ["m2:review"]  # the last sprint is reviewed, and nothing is left to re-plan
    finish(s, "m2:review", json.dumps({"summary": "ok", "verdict": "approve", "comments": []}))
    step(s)
    assert s.dag.done and s.status(now_ms=4)["state"] == "succeeded"
    assert [sp["state"] for sp in s.status(now_ms=4)["sprints"]] == ["done", "done"]


def test_acceptance_travels_with_the_dispatch() -> None:
    s = start()
    dispatched = {d.task_id: d for d in s.dispatchable(now_ms=1)}
    assert dispatched["design"].acceptance == "names every endpoint"


def test_a_sprint_boundary_waits_for_approval() -> None:
    s = start(gate=True)
    step(s)
    for tid in ("design", "schema"):
        finish(s, tid)
    step(s)
    finish(s, "m1:review", json.dumps({"summary": "ok", "verdict": "approve", "comments": []}))
    step(s)
    finish(s, "m1:replan", json.dumps({"summary": "no change", "tasks": [
        {"id": "build", "role": "backend", "description": "build it", "milestone": "m2", "depends_on": ["design"],
         "estimate": {"cost_usd": 0.02}}]}))
    assert step(s) == []
    status = s.status(now_ms=2)
    assert status["sprints"][1]["state"] == "awaiting_approval"
    assert "sprint m2 awaits approval: aios approve m2 --project P" in status["notes"]
    assert status["replans"][0]["changed"] == []  # a task listed as it was is not a change
    s = roundtrip(s)
    s.approve("m2")
    assert step(s) == ["build"]


def test_every_sprint_after_the_first_waits_when_the_deployment_says_so() -> None:
    s = ProjectState.from_plan(parse_plan(plan_text(), ROLES), now_ms=0)
    s.advance_sprints(now_ms=0, roles={"backend", "qa"}, approve_every=True)
    assert sorted(d.task_id for d in s.dispatchable(now_ms=0)) == ["design", "schema"]  # m1 opens
    for tid in ("design", "schema"):
        finish(s, tid)
    s.advance_sprints(now_ms=1, roles={"backend", "qa"}, approve_every=True)  # no reviewer, no planner here
    assert s.dispatchable(now_ms=1) == [] and s.sprints.sprints[1].state == "awaiting_approval"
    s.approve("m2")
    s.advance_sprints(now_ms=2, roles={"backend", "qa"}, approve_every=True)
    assert [d.task_id for d in s.dispatchable(now_ms=2)] == ["build"]


def test_rejecting_a_sprint_cancels_its_work_and_what_follows() -> None:
    s = start(gate=True)
    s.sprints.sprints[1].state = "awaiting_approval"
    acts = s.reject("m2", "not now")
    assert {(f.task_id, f.status) for f in acts.finals} == {("build", "cancelled"), ("test", "skipped")}
    assert s.sprints.sprints[1].state == "rejected"


def replan_ready() -> ProjectState:
    s = start()
    step(s)
    for tid in ("design", "schema"):
        finish(s, tid)
    step(s)
    finish(s, "m1:review", json.dumps({"summary": "ok", "verdict": "approve", "comments": []}))
    assert step(s) == ["m1:replan"]
    return s


@pytest.mark.parametrize(("answer", "problem"), [
    ({"summary": "x", "tasks": [{"id": "design", "role": "backend", "description": "redo", "milestone": "m2"}]},
     "has started or belongs to a sprint that has run"),
    ({"summary": "x", "tasks": [{"id": "n", "role": "wizard", "description": "magic"}]}, "unknown role 'wizard'"),
    ({"summary": "x", "tasks": [{"id": "n", "role": "qa", "description": "d", "depends_on": ["nope"]}]},
     "depends on unknown task 'nope'"),
    ({"summary": "x", "tasks": [{"id": "n", "role": "qa", "description": "d", "depends_on": ["test"]},
                                {"id": "test", "role": "qa", "description": "d", "depends_on": ["n"]}]},
     "dependency cycle"),
    ({"summary": "x", "remove": ["build"]}, "depends on unknown task 'build'"),
    ({"summary": "x", "tasks": [{"id": "big", "role": "qa", "description": "d", "estimate": {"cost_usd": 5}}]},
     "over the"),
    ({"summary": "x", "tasks": [{"id": "n", "role": "qa", "description": "d", "milestone": "m1"}]}, "has run"),
    ("not json", "not a JSON object"),
])
def test_an_invalid_replan_fails_the_attempt_and_keeps_the_plan(answer: Any, problem: str) -> None:
    s = replan_ready()
    text = answer if isinstance(answer, str) else json.dumps(answer)
    with pytest.raises(PlanError, match=problem):
        s.plan_change("m1:replan", text, ROLES)
    before = {t: (n.description, n.depends_on) for t, n in s.dag.nodes.items()}
    # As the orchestrator does: the invalid answer is a failed attempt, retried, then final.
    for _ in range(POLICY.max_attempts):
        node = s.dag.nodes["m1:replan"]
        s.on_attempt("m1:replan", node.attempts, False, "", f"the planner's re-plan is invalid: {problem}", 0.0,
                     now_ms=10, policy=POLICY, rng=RNG)
        step(s, now=100)
    assert s.dag.nodes["m1:replan"].state.value == "failed"
    assert {t: (n.description, n.depends_on) for t, n in s.dag.nodes.items() if t in before} == before
    assert "build" in [d for d in step(s, now=200)] or s.dag.nodes["build"].state.value == "dispatched"
    status = s.status(now_ms=200)
    assert status["replans"][0]["state"] == "failed" and "the remaining plan was kept" in status["replans"][0]["error"]
    assert status["sprints"][1]["state"] == "running"


def test_in_a_goals_project_the_tasks_a_replan_adds_read_the_plan_too() -> None:
    from aios.streams.orchestration.goal import goal_plan, planned_work

    roles = {"planner", "backend", "qa"}
    s = ProjectState.from_plan(goal_plan("P", "Build a shop", None, roles), now_ms=0)
    s.goal = True
    assert step(s) == ["plan"]
    answer = json.dumps({"summary": "s", "milestones": [{"id": "m1"}, {"id": "m2"}], "tasks": [
        {"id": "a", "role": "backend", "description": "a", "milestone": "m1"},
        {"id": "b", "role": "qa", "description": "b", "milestone": "m2", "depends_on": ["a"]}]})
    tasks, milestones = planned_work("P", "Build a shop", answer, roles)
    s.on_attempt("plan", 1, True, answer, None, 0.0, now_ms=1, policy=POLICY, rng=RNG)
    s.extend(tasks, now_ms=1, milestones=milestones)
    assert step(s) == ["a"]  # m1 is open at once: no approval asked
    s.on_attempt("a", 1, True, "done", None, 0.0, now_ms=2, policy=POLICY, rng=RNG)
    s.advance_sprints(now_ms=2, roles=roles)  # no reviewer here: straight to the re-plan
    assert [d.task_id for d in s.dispatchable(now_ms=2)] == ["m1:replan"]
    change = s.plan_change("m1:replan", json.dumps({"summary": "c", "tasks": [
        {"id": "c", "role": "qa", "description": "c", "milestone": "m2", "depends_on": ["a"]},
        {"id": "b", "role": "qa", "description": "b", "milestone": "m2", "depends_on": ["a"]}]}), roles)
    assert change is not None and change.changed == []  # b as it was: plan is carried, not a change
    assert [t.depends_on for t in change.added] == [("plan", "a")]


def test_an_empty_sprint_closes_without_a_review_and_a_cancel_ends_the_open_ones() -> None:
    s = ProjectState.from_plan(parse_plan(json.dumps({"project": "P", "milestones": [{"id": "m0"}, {"id": "m1"}],
                                                      "tasks": [{"id": "a", "role": "qa", "description": "a",
                                                                 "milestone": "m1"}]}), ROLES), now_ms=0)
    assert step(s) == ["a"]  # m0 had nothing to do: no review, no re-plan
    assert [sp.state for sp in s.sprints.sprints] == ["done", "running"]
    s.cancel(None, "stop")
    assert [sp.state for sp in s.sprints.sprints] == ["done", "cancelled"]


def test_a_stale_replan_attempt_is_not_read() -> None:
    s = replan_ready()
    assert s.plan_change("m1:replan", "not json", ROLES, attempt=7) is None


def test_plans_without_milestones_are_unchanged() -> None:
    s = ProjectState.from_plan(parse_plan(json.dumps({"project": "P", "tasks": [
        {"id": "a", "role": "backend", "description": "a"}]}), ROLES), now_ms=0)
    assert step(s) == ["a"]
    assert s.status(now_ms=1)["sprints"] == [] and s.status(now_ms=1)["replans"] == []


@pytest.mark.parametrize(("doc", "problem"), [
    ({"milestones": [{"id": "m1"}], "tasks": [{"id": "a", "role": "qa", "description": "d", "milestone": "m9"}]},
     "unknown milestone 'm9'"),
    ({"milestones": [{"id": "m1"}, {"id": "m1"}], "tasks": [{"id": "a", "role": "qa", "description": "d"}]},
     "duplicate ids"),
    ({"milestones": [{"id": "m1"}], "tasks": [{"id": "m1:review", "role": "qa", "description": "d"}]},
     "milestone 'm1'"),
    ({"milestones": [{"id": "a"}], "tasks": [{"id": "a", "role": "qa", "description": "d"}]}, "milestone 'a'"),
])
def test_a_plan_with_bad_milestones_is_refused_naming_them(doc: dict[str, Any], problem: str) -> None:
    with pytest.raises(PlanError, match=problem):
        parse_plan(json.dumps({"project": "P", **doc}), ROLES)


@settings(max_examples=60, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                        st.sampled_from(["summary", "tasks", "remove", "milestones", "id", "role", "description",
                                         "milestone", "depends_on", "estimate", "verdict"]), inner, max_size=5),
                    max_leaves=20))
def test_hostile_replans_and_reviews_never_raise_anything_but_a_plan_error(answer: Any) -> None:
    s = replan_ready()
    text = json.dumps(answer)
    try:
        s.plan_change("m1:replan", text, ROLES)
    except PlanError:
        pass
    s.sprints.on_review(s.dag, s.dag.nodes["m1:review"], text)  # a review is only ever read, never refused


IDS = st.sampled_from(["design", "schema", "build", "test", "n1", "n2", "m1", "m2:review", ""])
TASK = st.fixed_dictionaries({"id": IDS, "role": st.sampled_from(["backend", "qa", "wizard"]),
                              "description": st.sampled_from(["do it", "", " "])},
                             optional={"depends_on": st.lists(IDS, max_size=3),
                                       "milestone": st.sampled_from(["m1", "m2", "m3", "", "bad/id"]),
                                       "estimate": st.fixed_dictionaries({}, optional={
                                           "cost_usd": st.floats(allow_nan=True, allow_infinity=True),
                                           "tokens": st.integers(-5, 10**9)})})


@settings(max_examples=150, deadline=None)
@given(st.lists(TASK, max_size=4), st.lists(IDS, max_size=2),
       st.lists(st.fixed_dictionaries({"id": st.sampled_from(["m1", "m2", "m3", ""])}), max_size=2))
def test_any_replan_is_refused_or_leaves_a_dag_that_runs_to_the_end(tasks: list[Any], remove: list[str],
                                                                    milestones: list[Any]) -> None:
    s = replan_ready()
    answer = json.dumps({"summary": "x", "tasks": tasks, "remove": remove, "milestones": milestones})
    try:
        change = s.plan_change("m1:replan", answer, ROLES)
    except PlanError:
        return
    assert change is not None
    finish(s, "m1:replan", answer)
    s = roundtrip(s)
    for node in s.dag.nodes.values():  # every edge resolves, both ways
        assert all(d in s.dag.nodes and node.id in s.dag.dependents[d] for d in node.depends_on)
    for _ in range(50):  # everything left runs: no task is stranded behind a sprint or an edge
        ready = step(s, now=10)
        for tid in ready:
            finish(s, tid, json.dumps({"summary": "ok", "verdict": "approve", "comments": [], "tasks": [
                {"id": "x", "role": "qa", "description": "d"}]}))
        if s.dag.done:
            break
    assert s.dag.done
