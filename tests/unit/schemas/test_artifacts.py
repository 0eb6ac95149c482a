"""Artifact references in TaskResult: names, the four keys, hostile maps refused with a reason
(never an exception other than InvalidRecordError), and results from before artifacts still read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aios.schemas.artifacts import (
    MAX_ARTIFACTS,
    ArtifactNameError,
    ArtifactRef,
    check_name,
    ref_problems,
)
from aios.schemas.checks import check_result
from aios.schemas.codec import Codec, SchemaCatalog, load_catalog, parse_record_schema
from aios.schemas.errors import InvalidRecordError
from tests.unit.schemas import load_raw, sample_value, write_avsc

GOOD = ArtifactRef("src/main.py", 12, "0" * 64, "s3://bucket/p/t/1/src/main.py").to_event()


@pytest.mark.parametrize("name", ["a", "src/main.py", "a-b_c.d/e", ".env", "x" * 200])
def test_names_like_relative_paths_are_accepted(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "/abs", "a//b", "../x", "a/./b", "a/..", "a b", "a\\b", "é", "x" * 201,
                                  "/".join("a" * 9)])
def test_other_names_are_refused_with_the_rule(name: str) -> None:
    with pytest.raises(ArtifactNameError, match="joined by '/'"):
        check_name(name)


def result(**fields: Any) -> dict[str, Any]:
    return {**sample_value("TaskResult"), "project_id": "p", "task_id": "t", "role": "general",
            "event_id": "e", "trace_id": "t", "recall": [], **fields}


def test_a_result_with_references_passes_and_too_many_or_bad_ones_are_refused() -> None:
    check_result(result(artifacts=[GOOD]))
    with pytest.raises(InvalidRecordError, match=f"at most {MAX_ARTIFACTS}"):
        check_result(result(artifacts=[GOOD] * (MAX_ARTIFACTS + 1)))
    for bad, reason in (({**GOOD, "extra": "x"}, "exactly the keys"), ({**GOOD, "size": "-1"}, "whole number"),
                        ({**GOOD, "sha256": "F" * 64}, "lowercase hex"), ({**GOOD, "name": "../x"}, "artifact name"),
                        ({**GOOD, "uri": "has space"}, "printable")):
        with pytest.raises(InvalidRecordError, match=reason):
            check_result(result(artifacts=[bad]))


@given(st.lists(st.dictionaries(st.text(max_size=10), st.text(max_size=30), max_size=6), max_size=5))
def test_hostile_reference_maps_are_refused_with_a_reason_never_a_crash(maps: list[dict[str, str]]) -> None:
    for m in maps:
        problem = ref_problems(m)
        assert problem is None or isinstance(problem, str)
        if problem is None:
            assert ArtifactRef.from_event(m).to_event() == m
    try:
        check_result(result(artifacts=maps))
    except InvalidRecordError as exc:
        assert "artifacts:" in str(exc)


def test_task_results_written_before_artifacts_read_with_none(tmp_path: Path) -> None:
    old = load_raw("TaskResult")
    old["fields"] = [f for f in old["fields"] if f["name"] != "artifacts"]
    write_avsc(tmp_path, old, "TaskResult.v0.avsc")
    catalog = SchemaCatalog()
    catalog.add(parse_record_schema(old))
    value = {k: v for k, v in sample_value("TaskResult").items() if k != "artifacts"}
    data = Codec(catalog).encode("TaskResult", value)
    decoded = Codec(load_catalog(extra_writer_dirs=[tmp_path])).decode(data, expect="TaskResult")
    assert decoded.value == {**value, "artifacts": []}
