"""JSON from outside is parsed with a nesting limit: deep documents are a typed error, never a
RecursionError, and everything within the limit parses as ``json.loads`` would."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aios.schemas.errors import SchemaError
from aios.schemas.jsonlimits import MAX_JSON_DEPTH, JsonTooDeepError, json_depth, parse_json

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=6)
                           | st.dictionaries(st.text(max_size=3), inner, max_size=6), max_leaves=200)


def nested_text(kinds: list[bool], leaf: str = "0") -> str:
    """One value nested len(kinds) deep: an array (True) or an object (False) per level."""
    opening = "".join("[" if array else '{"k":' for array in kinds)
    closing = "".join("]" if array else "}" for array in reversed(kinds))
    return opening + leaf + closing


def reference_depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(reference_depth, value.values()), default=0)
    if isinstance(value, list | tuple):
        return 1 + max(map(reference_depth, value), default=0)
    return 0


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_depth_matches_the_recursive_definition_and_small_documents_parse_as_json_loads(value: Any) -> None:
    assert json_depth(value) == reference_depth(value)
    text = json.dumps(value)
    assert parse_json(text) == json.loads(text)
    assert parse_json(text.encode()) == json.loads(text)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.booleans(), min_size=0, max_size=3000), st.sampled_from(["0", '"x"', "[]", "{}", "[1, [2]]"]))
def test_any_nesting_is_parsed_or_refused_by_depth_alone(kinds: list[bool], leaf: str) -> None:
    text = nested_text(kinds, leaf)
    depth = len(kinds) + {"[]": 1, "{}": 1, "[1, [2]]": 2}.get(leaf, 0)
    if depth <= MAX_JSON_DEPTH:
        assert json_depth(parse_json(text)) == depth
    else:
        with pytest.raises(JsonTooDeepError):
            parse_json(text)


@pytest.mark.parametrize("kinds", [[True] * 100_000, [False] * 100_000, [i % 2 == 0 for i in range(100_000)]],
                         ids=["arrays", "objects", "both"])
def test_a_document_100_000_levels_deep_is_a_typed_error(kinds: list[bool]) -> None:
    with pytest.raises(JsonTooDeepError) as err:
        parse_json(nested_text(kinds))
    assert isinstance(err.value, SchemaError) and "deeper than 64 levels" in str(err.value)


def test_deep_text_that_never_closes_is_still_a_typed_error() -> None:
    with pytest.raises((JsonTooDeepError, json.JSONDecodeError)):
        parse_json("[" * 100_000)


def test_wide_documents_are_fine_and_the_limit_is_exact() -> None:
    assert len(parse_json(json.dumps(list(range(200_000))))) == 200_000
    assert len(parse_json(json.dumps({str(i): [i] for i in range(100_000)}))) == 100_000
    assert json_depth(parse_json(nested_text([True] * MAX_JSON_DEPTH))) == MAX_JSON_DEPTH
    with pytest.raises(JsonTooDeepError):
        parse_json(nested_text([True] * (MAX_JSON_DEPTH + 1)))
    assert parse_json(nested_text([True] * 10), max_depth=10) == parse_json(nested_text([True] * 10))
    with pytest.raises(JsonTooDeepError):
        parse_json(nested_text([True] * 11), max_depth=10)


def test_malformed_text_keeps_the_stdlib_error() -> None:
    with pytest.raises(json.JSONDecodeError):
        parse_json("[1, 2")
    with pytest.raises(UnicodeDecodeError):
        parse_json(b"\xff\xfe\xfa")


def test_depth_stops_early_and_walks_tuples() -> None:
    deep: Any = 0
    for _ in range(100_000):  # built, not parsed: deeper than any parser would go
        deep = [deep]
    assert json_depth(deep) == 100_000
    assert json_depth(deep, stop_above=5) == 6
    assert json_depth(((), {"a": ((1,),)})) == 4
    assert json_depth("text") == 0
