"""Memory ids carry the project: the same on every replay of an attempt, and never the same for two
different (project, task, attempt), whatever separators the ids hold."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from aios.connectors.context.windows import base_scope, lane
from aios.connectors.vector.base import point_id
from aios.streams.processors.agent_privacy import turn_memory_id

ids = st.text(alphabet=st.sampled_from("ab:/%_-. 1é"), max_size=8)


@given(a=st.tuples(ids, ids, st.integers(1, 5)), b=st.tuples(ids, ids, st.integers(1, 5)))
@settings(max_examples=2000, deadline=None)
def test_distinct_attempts_have_distinct_memory_ids_and_points(a: tuple[str, str, int],
                                                              b: tuple[str, str, int]) -> None:
    assert turn_memory_id(*a) == turn_memory_id(*a)  # a replay: the same id
    if a != b:
        assert turn_memory_id(*a) != turn_memory_id(*b)
        assert point_id(turn_memory_id(*a)) != point_id(turn_memory_id(*b))


def test_the_same_plan_task_in_two_projects() -> None:
    assert turn_memory_id("acme", "t1", 1) != turn_memory_id("globex", "t1", 1)
    assert turn_memory_id("a:b", "c", 1) != turn_memory_id("a", "b:c", 1)


@given(scope=st.sampled_from(["session", "project", "agent", "task"]), restricted=st.booleans())
def test_a_restricted_lane_is_its_own_scope_with_its_scopes_policy(scope: str, restricted: bool) -> None:
    assert base_scope(lane(scope, restricted)) == scope
    assert (lane(scope, restricted) == scope) is not restricted
