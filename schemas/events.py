"""Helpers that build event dicts with the envelope every AIOS event carries."""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any


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
        return int(value.timestamp() * 1000)
    return int(value)
