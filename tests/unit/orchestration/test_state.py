"""Project state: retries with backoff, dead letters with every error, budget, status, round trips."""

from __future__ import annotations

import json
import random

from aios.streams.orchestration.plan import Plan, PlannedTask
from aios.streams.orchestration.state import ProjectState, RetryPolicy

POLICY = RetryPolicy(max_attempts=3, base_ms=100, max_ms=1000, jitter=0.0)


def plan(budget: float | None = None) -> Plan:
    return Plan(project="P", budget_usd=budget, tasks=(
        PlannedTask(id="a", role="backend", description="A"),
        PlannedTask(id="b", role="qa", description="B", depends_on=("a",)),
    ))


def roundtrip(s: ProjectState) -> ProjectState:
    return ProjectState.from_dict(json.loads(json.dumps(s.to_dict())))


def test_retry_with_backoff_then_dead_letter_with_every_error() -> None:
    s = ProjectState.from_plan(plan(), now_ms=0)
    rng = random.Random(0)
    [d] = s.dispatchable(now_ms=0)
    assert (d.task_id, d.attempt) == ("a", 1)
    acts = s.on_attempt("a", 1, False, "", "boom 1", 0.0, now_ms=10, policy=POLICY, rng=rng)
    assert acts.retry_at_ms == [110]
    assert s.dispatchable(now_ms=100) == []  # the consumer never sleeps: it is simply not due yet
    s = roundtrip(s)
    [d] = s.dispatchable(now_ms=110)
    assert d.attempt == 2
    s.on_attempt("a", 2, False, "", "boom 2", 0.0, now_ms=120, policy=POLICY, rng=rng)
    [d] = s.dispatchable(now_ms=1000)
    assert d.attempt == 3
    acts = s.on_attempt("a", 3, False, "", "boom 3", 0.0, now_ms=1100, policy=POLICY, rng=rng)
    assert [(f.task_id, f.status) for f in acts.finals] == [("a", "failed"), ("b", "skipped")]
    assert acts.dead_letters == [("a", ["attempt 1: boom 1", "attempt 2: boom 2", "attempt 3: boom 3"])]
    assert s.dag.done


def test_stale_and_duplicate_attempts_change_nothing() -> None:
    s = ProjectState.from_plan(plan(), now_ms=0)
    s.dispatchable(now_ms=0)
    rng = random.Random(0)
    assert s.on_attempt("a", 7, True, "x", None, 0.0, now_ms=1, policy=POLICY, rng=rng).finals == []
    first = s.on_attempt("a", 1, True, "out", None, 0.5, now_ms=1, policy=POLICY, rng=rng)
    again = s.on_attempt("a", 1, True, "out", None, 0.5, now_ms=2, policy=POLICY, rng=rng)
    assert len(first.finals) == 1 and not again
    assert s.cost_usd == 0.5
    [d] = s.dispatchable(now_ms=3)
    assert d.context == {"a": "out"}


def test_budget_stops_new_dispatches_and_says_so() -> None:
    s = ProjectState.from_plan(plan(budget=0.01), now_ms=0)
    s.dispatchable(now_ms=0)
    s.on_attempt("a", 1, True, "out", None, 0.02, now_ms=5, policy=POLICY, rng=random.Random(0))
    assert s.dispatchable(now_ms=6) == []
    status = s.status(now_ms=10)
    assert status["state"] == "budget_exhausted"
    assert any("budget" in n for n in status["notes"])


def test_status_counts_percent_and_missing_roles() -> None:
    s = ProjectState.from_plan(plan(), now_ms=1_000)
    s.dispatchable(now_ms=1_000)
    status = s.status(now_ms=3_500, live_roles={"qa"})
    assert status["counts"]["dispatched"] == 1 and status["percent_done"] == 0.0
    assert status["elapsed_ms"] == 2_500
    assert status["critical_path"] == ["a", "b"]
    assert status["notes"] == ["no live agent for role 'backend': its tasks wait"]


def test_cancel_project_and_standalone_tasks() -> None:
    s = ProjectState.from_plan(plan(), now_ms=0)
    acts = s.add_task(PlannedTask(id="c", role="qa", description="C", depends_on=("zzz",)), submitted_ms=0)
    assert acts.finals[0].status == "failed" and "zzz" in (acts.finals[0].error or "")
    s.dispatchable(now_ms=0)
    acts = s.cancel(None, "stop")
    assert {(f.task_id, f.status) for f in acts.finals} == {("a", "cancelled"), ("b", "skipped")}
    assert s.status(now_ms=1)["state"] == "cancelled"
    assert s.on_attempt("a", 1, True, "late", None, 0.0, now_ms=2, policy=POLICY,
                        rng=random.Random(0)).finals == []


def test_backoff_grows_and_is_capped_with_jitter() -> None:
    p = RetryPolicy(base_ms=100, max_ms=1000, jitter=0.2)
    rng = random.Random(1)
    delays = [p.delay_ms(n, rng) for n in (1, 2, 3, 10)]
    assert 80 <= delays[0] <= 120 and 160 <= delays[1] <= 240 and 320 <= delays[2] <= 480
    assert 800 <= delays[3] <= 1200


def test_a_permanent_error_is_not_retried() -> None:
    s = ProjectState.from_plan(plan(), now_ms=0)
    s.dispatchable(now_ms=0)
    acts = s.on_attempt("a", 1, False, "", "401 bad key", 0.0, now_ms=1, policy=POLICY, rng=random.Random(0),
                        retryable=False)
    assert [(f.task_id, f.status) for f in acts.finals] == [("a", "failed"), ("b", "skipped")]
    assert acts.dead_letters == [("a", ["attempt 1: 401 bad key"])]


def test_finished_standalone_tasks_leave_the_state_but_stay_counted() -> None:
    s = ProjectState.empty("default", now_ms=0)
    rng = random.Random(0)
    for i in range(50):
        s.add_task(PlannedTask(id=f"t{i}", role="qa", description="x"), submitted_ms=0)
        s.dispatchable(now_ms=0)
        s.on_attempt(f"t{i}", 1, True, "ok", None, 0.0, now_ms=1, policy=POLICY, rng=rng)
        s.archive_finished_standalone()
    s = roundtrip(s)
    assert s.dag.nodes == {}
    status = s.status(now_ms=2)
    assert status["counts"]["succeeded"] == 50 and status["state"] == "succeeded"
    planned = ProjectState.from_plan(plan(), now_ms=0)
    planned.archive_finished_standalone()
    assert set(planned.dag.nodes) == {"a", "b"}  # a plan's tasks always stay


def test_an_attempt_with_no_outcome_times_out_and_is_retried_then_fails() -> None:
    s = ProjectState.from_plan(plan(), now_ms=0)
    rng = random.Random(0)
    [d] = s.dispatchable(now_ms=0)
    assert s.next_timeout_ms(1000) == 1000
    assert not s.time_out(now_ms=999, timeout_ms=1000, policy=POLICY, rng=rng)
    acts = s.time_out(now_ms=1000, timeout_ms=1000, policy=POLICY, rng=rng)
    assert acts.retry_at_ms == [1100] and s.next_timeout_ms(1000) is None
    # The first attempt's late outcome is stale: it changes nothing.
    assert not s.on_attempt("a", 1, True, "late", None, 0.0, now_ms=1050, policy=POLICY, rng=rng)
    [d] = s.dispatchable(now_ms=1100)
    assert d.attempt == 2
    s.time_out(now_ms=2100, timeout_ms=1000, policy=POLICY, rng=rng)
    [d] = s.dispatchable(now_ms=5000)
    acts = s.time_out(now_ms=6000, timeout_ms=1000, policy=POLICY, rng=rng)
    assert [(f.task_id, f.status) for f in acts.finals] == [("a", "failed"), ("b", "skipped")]
    [(task, errors)] = acts.dead_letters
    assert task == "a" and errors == [f"attempt {n}: not picked up within 1s" for n in (1, 2, 3)]


def test_the_timeout_counts_from_the_pickup_and_a_backlog_does_not_time_out() -> None:
    s = ProjectState.from_plan(plan(), now_ms=0)
    rng = random.Random(0)
    [d] = s.dispatchable(now_ms=0)
    # Queued behind a backlog for longer than the task timeout, but within the pickup timeout.
    assert s.next_timeout_ms(1000, pickup_ms=60_000) == 60_000
    assert not s.time_out(now_ms=30_000, timeout_ms=1000, policy=POLICY, rng=rng, pickup_ms=60_000)
    s.on_started("a", 2, now_ms=30_000)  # a stale pickup (another attempt) changes nothing
    assert s.next_timeout_ms(1000, pickup_ms=60_000) == 60_000
    s.on_started("a", 1, now_ms=30_000)
    assert s.next_timeout_ms(1000, pickup_ms=60_000) == 31_000
    assert not s.time_out(now_ms=30_999, timeout_ms=1000, policy=POLICY, rng=rng, pickup_ms=60_000)
    acts = s.time_out(now_ms=31_000, timeout_ms=1000, policy=POLICY, rng=rng, pickup_ms=60_000)
    assert acts.retry_at_ms and s.dag.nodes["a"].errors == ["attempt 1: no outcome within 1s of its pickup"]
    # The pickup is part of the logged state: a restarted orchestrator keeps counting from it.
    again = ProjectState.from_plan(plan(), now_ms=0)
    again.dispatchable(now_ms=0)
    again.on_started("a", 1, now_ms=5)
    assert ProjectState.from_dict(again.to_dict()).dag.nodes["a"].started_ms == 5
