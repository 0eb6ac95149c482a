"""Helpers that build event dicts with the envelope every AIOS event carries."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson


def now_ms() -> int:
    return int(time.time() * 1000)


def new_id() -> str:
    return uuid.uuid4().hex


def envelope(trace_id: str | None = None) -> dict[str, Any]:
    """A fresh event_id, the current time and the trace id (new when not given)."""
    return {"event_id": new_id(), "timestamp": now_ms(), "trace_id": trace_id or new_id()}


def to_ms(value: datetime | int) -> int:
    """Decoded timestamp-millis fields are datetimes; encoded ones may be ints."""
    if isinstance(value, datetime):
        # Integer arithmetic: float seconds * 1000 truncates some values by a millisecond.
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)  # fastavro treats naive datetimes as UTC
        return (value - _EPOCH) // timedelta(milliseconds=1)
    return int(value)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def json_default(value: Any) -> Any:
    """The JSON form of what JSON lacks, for ``dumps(default=...)``: timestamps as epoch ms, bytes as
    base64. The one JSON form of an event: the CLI, the WebSocket, the JSON egress and the history
    all write it."""
    if isinstance(value, datetime):
        return to_ms(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def event_json(value: Mapping[str, Any] | Sequence[Any]) -> bytes:
    """A decoded event as compact UTF-8 JSON (timestamps as epoch ms, bytes as base64).

    orjson, not the stdlib: the history sink does this for every stored event.
    """
    return orjson.dumps(value, default=json_default, option=orjson.OPT_PASSTHROUGH_DATETIME)


def event_doc(value: Any) -> Any:
    """A decoded event (or a list or mapping of them) as plain JSON values, in the same form as
    :func:`event_json`: for documents that embed events, such as ``--json`` output."""
    return orjson.loads(event_json(value))
