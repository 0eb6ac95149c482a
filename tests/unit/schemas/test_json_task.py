"""JSON tasks in and results out: what is accepted, what is rejected, and why."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aios.schemas.codec import Codec
from aios.schemas.json_task import (
    InvalidJsonTaskError,
    SubmitterNotAllowedError,
    check_submitter,
    result_to_json,
    task_from_json,
)

ROLES = ("general", "backend")


def convert(obj: object, source: str = "t/0/1") -> dict[str, object]:
    return task_from_json(json.dumps(obj).encode(), roles=ROLES, source=source)


def test_a_minimal_task_gets_defaults_and_encodes_as_a_task() -> None:
    task = convert({"description": "Write the changelog"})
    assert task["role"] == "general"
    assert task["project_id"] == "default"
    assert task["submitted_by"] == "json"
    Codec(validate=True).encode("Task", task, "x.tasks")  # a valid Avro Task


def test_every_field_is_carried_over() -> None:
    task = convert({"description": "d", "role": "backend", "project": "p1", "priority": 3, "task_id": "t-1",
                    "depends_on": ["t-0"], "privacy": "restricted", "submitted_by": "crm",
                    "metadata": {"ticket": "42"}, "trace_id": "tr"})
    assert {k: task[k] for k in ("role", "project_id", "priority", "task_id", "depends_on", "privacy",
                                 "submitted_by", "metadata", "trace_id")} == {
        "role": "backend", "project_id": "p1", "priority": 3, "task_id": "t-1", "depends_on": ["t-0"],
        "privacy": "restricted", "submitted_by": "crm", "metadata": {"ticket": "42"}, "trace_id": "tr"}


def test_a_redelivered_record_makes_the_same_task() -> None:
    first, again = convert({"description": "d"}), convert({"description": "d"})
    assert (first["task_id"], first["event_id"]) == (again["task_id"], again["event_id"])
    other = convert({"description": "d"}, source="t/0/2")
    assert other["task_id"] != first["task_id"]


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "empty record"),
    (b"{not json", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b'"a string"', "must be a JSON object"),
    (b"{}", "'description' must be a non-empty string"),
    (b'{"description": "  "}', "'description' must be a non-empty string"),
    (b'{"description": "d", "descripton": "typo"}', "unknown field(s) descripton"),
    (b'{"description": "d", "role": "chef"}', "unknown role 'chef'"),
    (b'{"description": "d", "priority": "high"}', "'priority' must be an integer"),
    (b'{"description": "d", "priority": true}', "'priority' must be an integer"),
    # The range every entry point shares: the plan model refuses 5000, so the ingress does too.
    (b'{"description": "d", "priority": 5000}', r"priority: 5000 is not an integer in -1000..1000"),
    (b'{"description": "d", "priority": 9999999999}', r"priority: 9999999999 is not an integer in -1000..1000"),
    (b'{"description": "d", "task_id": "a/b"}', "task_id: 'a/b' is not an id"),
    (b'{"description": "d", "project": "p\\u0000"}', "project_id: 'p\\x00' is not an id"),
    (b'{"description": "' + b"x" * 20_001 + b'"}', "description: 20001 characters; at most 20000"),
    (b'{"description": "d", "privacy": "secret"}', "'privacy' must be one of normal, restricted"),
    (b'{"description": "d", "metadata": {"n": 1}}', "'metadata' must map strings to strings"),
    (b'{"description": "d", "depends_on": "t-0"}', "'depends_on' must be a list of strings"),
])
def test_invalid_records_say_what_to_fix(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidJsonTaskError) as info:
        task_from_json(data, roles=ROLES, source="t/0/1")
    assert reason in str(info.value)


def test_results_become_one_line_of_json() -> None:
    line = result_to_json({"task_id": "t", "timestamp": datetime(2026, 1, 1, tzinfo=UTC), "raw": b"\x00",
                           "output": "two\nlines"})
    assert b"\n" not in line
    assert json.loads(line) == {"task_id": "t", "timestamp": 1767225600000, "raw": "AA==", "output": "two\nlines"}


@pytest.mark.parametrize("data", [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"description": "d", "metadata": {"k": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
    b'{"description": ' * 100_000,  # never closed
])
def test_a_record_nested_100_000_levels_deep_is_refused_with_the_reason(data: bytes) -> None:
    with pytest.raises(InvalidJsonTaskError, match="nested deeper than 64 levels"):
        task_from_json(data, roles=ROLES, source="t/0/1")


@settings(max_examples=100, deadline=None)
@given(field=st.sampled_from(["description", "depends_on", "metadata", "priority", "task_id"]),
       depth=st.integers(1, 3000), wide=st.integers(0, 1000))
def test_deep_or_wide_values_in_any_field_are_refused_with_a_reason(field: str, depth: int, wide: int) -> None:
    value = "[" * depth + json.dumps(["x"] * wide) + "]" * depth
    data = json.dumps({"description": "d", field: "@RAW@"}).replace('"@RAW@"', value).encode()
    with pytest.raises(InvalidJsonTaskError):
        task_from_json(data, roles=ROLES, source="t/0/1")


ALLOWED = {"crm-connector": ("sales",), "ops": ("*",)}


@pytest.mark.parametrize(("record", "refused"), [
    ({"description": "d", "submitted_by": "crm-connector", "project_id": "sales"}, None),
    ({"description": "d", "submitted_by": "ops", "project_id": "anything"}, None),
    ({"description": "d", "submitted_by": "crm-connector", "project_id": "finance"},
     "may not create tasks in project 'finance'"),
    ({"description": "d", "submitted_by": "intruder", "project_id": "sales"}, "submitter 'intruder'"),
    ({"description": "d", "project_id": "sales"}, "submitter 'json'"),  # no submitted_by: "json", not listed
])
def test_the_submitter_allow_list_names_who_may_create_tasks_where(record: dict[str, str], refused: str | None) -> None:
    task = convert(record)
    check_submitter(task, None)  # unset: everyone, everywhere
    if refused is None:
        check_submitter(task, ALLOWED)
        return
    with pytest.raises(SubmitterNotAllowedError, match=refused) as caught:
        check_submitter(task, ALLOWED)
    assert "AIOS_INGRESS_SUBMITTERS" in str(caught.value) and isinstance(caught.value, InvalidJsonTaskError)


@given(who=st.text(max_size=20), project=st.text(min_size=1, max_size=20))
@settings(max_examples=200, deadline=None)
def test_only_listed_pairs_pass_the_allow_list(who: str, project: str) -> None:
    task = {"submitted_by": who, "project_id": project}
    allowed = {"a": ("p",), "b": ("*",)}
    ok = who == "b" or (who == "a" and project == "p")
    try:
        check_submitter(task, allowed)
    except SubmitterNotAllowedError:
        assert not ok
    else:
        assert ok
