"""The one JSON form of an event (epoch-ms timestamps, base64 bytes), used by the CLI's --json, the
WebSocket, the JSON egress and the history alike."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from aios.schemas.events import event_doc, event_json, to_ms
from aios.schemas.json_task import result_to_json

leaves = (st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.text(max_size=4) | st.binary(max_size=4)
          | st.datetimes(timezones=st.just(UTC)))
values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=5)
                      | st.dictionaries(st.text(max_size=3), inner, max_size=5), max_leaves=60)


def reference(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: reference(v) for k, v in value.items()}
    if isinstance(value, list):
        return [reference(v) for v in value]
    if isinstance(value, datetime):
        return to_ms(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value


@given(st.dictionaries(st.text(max_size=3), values, max_size=5))
def test_event_doc_is_the_plain_json_of_event_json(event: dict[str, Any]) -> None:
    assert event_doc(event) == reference(event) == json.loads(event_json(event))


def test_timestamps_are_epoch_milliseconds_everywhere() -> None:
    when = datetime(2026, 12, 7, 3, 25, 7, 123000, tzinfo=UTC)
    event = {"task_id": "t1", "timestamp": when, "payload": b"\x00\xff"}
    expected = {"task_id": "t1", "timestamp": 1796613907123, "payload": "AP8="}
    assert event_doc(event) == expected
    assert json.loads(result_to_json(event)) == expected  # what the JSON egress writes
