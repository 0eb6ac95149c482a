"""AIOS tasks in A2A's terms (api/a2a_tasks.py): the state mapping, the task a message asks for, and
hostile messages, which raise an A2A error that says what to change and nothing else."""

from __future__ import annotations

import pytest
from a2a.types.a2a_pb2 import (
    TASK_STATE_CANCELED,
    TASK_STATE_COMPLETED,
    TASK_STATE_FAILED,
    TASK_STATE_SUBMITTED,
    TASK_STATE_WORKING,
    Message,
    Part,
)
from a2a.utils.errors import A2AError, InvalidParamsError, UnsupportedOperationError
from hypothesis import example, given
from hypothesis import strategies as st

from aios.api.a2a_tasks import TaskView, a2a_state, read_message, to_task

ROLES = ("general", "qa")


def msg(*texts: str, context: str = "", task: str = "") -> Message:
    return Message(message_id="m", context_id=context, task_id=task, parts=[Part(text=t) for t in texts])


@pytest.mark.parametrize(("state", "attempts", "expected"), [
    ("submitted", 0, TASK_STATE_SUBMITTED), ("pending", 0, TASK_STATE_SUBMITTED),
    ("ready", 1, TASK_STATE_WORKING), ("dispatched", 0, TASK_STATE_WORKING),
    ("awaiting_approval", 1, TASK_STATE_SUBMITTED), ("succeeded", 1, TASK_STATE_COMPLETED),
    ("failed", 3, TASK_STATE_FAILED), ("skipped", 0, TASK_STATE_FAILED), ("cancelled", 1, TASK_STATE_CANCELED),
])
def test_aios_states_map_onto_a2a_states(state: str, attempts: int, expected: int) -> None:
    assert a2a_state(state, attempts) == expected


def test_a_finished_task_carries_its_answer_and_a_failed_one_its_reason() -> None:
    done = to_task(TaskView("t1", "p", "general", "say hi", "succeeded", 1, output="hi"))
    assert done.id == "t1" and done.context_id == "p" and done.status.state == TASK_STATE_COMPLETED
    assert [(a.name, a.parts[0].text) for a in done.artifacts] == [("output", "hi")]
    assert done.history[0].parts[0].text == "say hi"
    failed = to_task(TaskView("t2", "p", "general", "x", "failed", 3, reason="the model broke its contract"))
    assert not failed.artifacts and failed.status.message.parts[0].text == "the model broke its contract"


def test_a_message_becomes_a_submission() -> None:
    ask = read_message(msg("design the", "API", context="shop"), {"priority": 5.0}, role=None, roles=ROLES,
                       default_role="general")
    assert (ask.description, ask.role, ask.project, ask.priority, ask.privacy) == (
        "design the\nAPI", "general", "shop", 5, "normal")
    by_path = read_message(msg("x"), {"role": "general", "project": "p2"}, role="qa", roles=ROLES,
                           default_role="general")
    assert (by_path.role, by_path.project) == ("qa", "p2"), "the path's role wins; metadata's project wins"


@pytest.mark.parametrize(("message", "metadata", "error", "says"), [
    (msg("x", task="t1"), {}, UnsupportedOperationError, "cannot be continued"),
    (msg(" "), {}, InvalidParamsError, "no text"),
    (msg("x"), {"role": "wizard"}, InvalidParamsError, "unknown role"),
    (msg("x", context="bad id!"), {}, InvalidParamsError, "not a valid id"),
    (msg("x"), {"priority": True}, InvalidParamsError, "priority"),
    (msg("x"), {"priority": 10_000}, InvalidParamsError, "priority"),
    (msg("x"), {"privacy": "secret"}, InvalidParamsError, "privacy"),
])
def test_a_bad_message_says_what_to_change(message: Message, metadata: dict[str, object], error: type[A2AError],
                                          says: str) -> None:
    with pytest.raises(error, match=says):
        read_message(message, metadata, role=None, roles=ROLES, default_role="general")


SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)


@given(texts=st.lists(st.text(max_size=200), max_size=4), context=st.text(max_size=200),
       task=st.just("") | st.text(max_size=5),
       metadata=st.dictionaries(st.sampled_from(["role", "project", "priority", "privacy", "x"]),
                                SCALARS | st.lists(SCALARS, max_size=3), max_size=5))
@example(texts=["x"], context="", task="", metadata={"x": float("inf")})  # Python's JSON reader takes Infinity
def test_hostile_messages_raise_only_a2a_errors(texts: list[str], context: str, task: str,
                                                metadata: dict[str, object]) -> None:
    message = msg(*texts, context=context, task=task)
    # The same values in the message's own metadata and as a data part: Infinity and NaN (which
    # Python's JSON reader takes) reach a Struct, and must come back as an A2A error.
    message.metadata.update(metadata)
    data = Part()
    data.data.struct_value.update(metadata)
    message.parts.append(data)
    try:
        ask = read_message(message, metadata, role=None, roles=ROLES, default_role="general")
    except A2AError:
        return
    assert ask.role in ROLES and ask.description.strip() and ask.privacy in ("normal", "restricted")
