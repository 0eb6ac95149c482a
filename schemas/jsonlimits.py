"""JSON from outside the platform (model answers, tool arguments, plan files, JSON records), parsed
with a limit on how deeply it nests.

The stdlib parser recurses in C and raises ``RecursionError`` once a document nests about as deep
as the interpreter's recursion limit, less however deep the caller already is: the same document
can pass in one place and fail in another. A fixed limit far below that, checked without recursion,
gives one answer everywhere and keeps whatever walks the value next (jsonschema, pydantic,
``repr``, ``json.dumps``) well inside the stack.
"""

from __future__ import annotations

import json
from typing import Any

from aios.schemas.errors import SchemaError

# Every contract of ours nests under ten levels; jsonschema spends about six frames per level of
# a recursive schema, so 64 levels stay far from the default limit of 1,000 frames.
MAX_JSON_DEPTH = 64


class JsonTooDeepError(SchemaError):
    """A JSON document nests lists and objects deeper than the limit."""

    def __init__(self, max_depth: int) -> None:
        super().__init__(f"JSON nested deeper than {max_depth} levels of lists and objects")
        self.max_depth = max_depth


def json_depth(value: object, *, stop_above: int | None = None) -> int:
    """How deeply lists, tuples and dicts nest in ``value`` (0 for a scalar, 1 for ``[]``).

    With ``stop_above``, the walk ends as soon as it finds a depth above it (and returns that).
    """
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > deepest:
            deepest = depth
            if stop_above is not None and deepest > stop_above:
                break
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list | tuple))
    return deepest


def parse_json(text: str | bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads``, but a document nested deeper than ``max_depth`` raises ``JsonTooDeepError``.

    Text that is not JSON raises ``json.JSONDecodeError`` (and undecodable bytes
    ``UnicodeDecodeError``), as ``json.loads`` does.
    """
    try:
        value = json.loads(text)
    except RecursionError as exc:
        raise JsonTooDeepError(max_depth) from exc
    if json_depth(value, stop_above=max_depth) > max_depth:
        raise JsonTooDeepError(max_depth)
    return value
