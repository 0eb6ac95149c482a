"""``jsonable``: decoded events (any nesting) as JSON-ready values, the same as the recursive walk."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.cli.events import jsonable

leaves = (st.none() | st.booleans() | st.integers() | st.text(max_size=4) | st.binary(max_size=4)
          | st.datetimes(timezones=st.just(UTC)))
values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=5)
                      | st.dictionaries(st.text(max_size=3), inner, max_size=5), max_leaves=100)


def reference(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: reference(v) for k, v in value.items()}
    if isinstance(value, list):
        return [reference(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value


@settings(max_examples=300, deadline=None)
@given(values)
def test_the_walk_matches_the_recursive_definition_key_order_included(value: Any) -> None:
    got = jsonable(value)
    assert got == reference(value)
    assert json.dumps(got) == json.dumps(reference(value))


def test_a_value_100_000_levels_deep_is_walked_without_recursion() -> None:
    deep: Any = b"\x00"
    for i in range(100_000):
        deep = [deep] if i % 2 else {"k": deep}
    out = jsonable(deep)
    for _ in range(100_000):
        out = out[0] if isinstance(out, list) else out["k"]
    assert out == "AA=="
