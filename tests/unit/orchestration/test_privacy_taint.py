"""restricted follows the content: a task reading a restricted task's output is restricted too."""

from __future__ import annotations

import json
import random

from aios.streams.orchestration.plan import Plan, PlannedTask
from aios.streams.orchestration.state import ProjectState, RetryPolicy

POLICY = RetryPolicy(max_attempts=1, jitter=0.0)


def test_dependents_of_a_restricted_task_are_dispatched_restricted_transitively() -> None:
    s = ProjectState.from_plan(Plan(project="P", tasks=(
        PlannedTask(id="secret", role="r", description="read the payroll", privacy="restricted"),
        PlannedTask(id="summary", role="r", description="summarise it", depends_on=("secret",)),
        PlannedTask(id="post", role="r", description="announce the summary", depends_on=("summary",)),
        PlannedTask(id="other", role="r", description="unrelated"),
    )), now_ms=0)
    rng = random.Random(0)
    first = {d.task_id: d.privacy for d in s.dispatchable(now_ms=0)}
    assert first == {"secret": "restricted", "other": "normal"}
    s.on_attempt("secret", 1, True, "salaries: …", None, 0.0, now_ms=1, policy=POLICY, rng=rng)
    [summary] = s.dispatchable(now_ms=2)
    assert (summary.task_id, summary.privacy, summary.context) == ("summary", "restricted", {"secret": "salaries: …"})
    # The taint is part of the logged state: a restarted orchestrator keeps it.
    s = ProjectState.from_dict(json.loads(json.dumps(s.to_dict())))
    s.on_attempt("summary", 1, True, "a summary of salaries", None, 0.0, now_ms=3, policy=POLICY, rng=rng)
    [post] = s.dispatchable(now_ms=4)
    assert (post.task_id, post.privacy) == ("post", "restricted")


def test_a_normal_chain_stays_normal() -> None:
    s = ProjectState.from_plan(Plan(project="P", tasks=(
        PlannedTask(id="a", role="r", description="A"),
        PlannedTask(id="b", role="r", description="B", depends_on=("a",)),
    )), now_ms=0)
    s.dispatchable(now_ms=0)
    s.on_attempt("a", 1, True, "out", None, 0.0, now_ms=1, policy=POLICY, rng=random.Random(0))
    [b] = s.dispatchable(now_ms=2)
    assert b.privacy == "normal"
