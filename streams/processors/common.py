"""What every processor shares: raw topics, decoding with DLQ fallback, and producing events."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import faust

from schemas.errors import SchemaError
from schemas.events import envelope
from streams.metrics import DEAD_LETTERS
from streams.runtime import Runtime

log = logging.getLogger("aios.streams")


_topics: dict[tuple[int, tuple[str, ...]], Any] = {}


def raw_topic(app: faust.App, *names: str) -> Any:
    """A bytes-in, bytes-out faust topic, made once per app (building one per send is costly)."""
    key = (id(app), names)
    topic = _topics.get(key)
    if topic is None:
        # Values stay bytes: decoding is ours, so undecodable records can reach the DLQ intact.
        topic = app.topic(*names, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
        _topics[key] = topic
    return topic


async def send(app: faust.App, rt: Runtime, topic: str, record: str, value: Mapping[str, Any], key: str) -> None:
    """Hand an event to the producer; faust flushes it before the input offset is committed."""
    data = rt.codec.encode(record, value, topic)
    await raw_topic(app, topic).send(key=key.encode(), value=data)


async def dead_letter(
    app: faust.App, rt: Runtime, message: Any, processor: str, exc: Exception, errors: list[str] | None = None
) -> None:
    """Keep the original bytes and the reason on the DLQ; the stream goes on."""
    value = {
        **envelope(),
        "source_topic": message.topic,
        "source_partition": int(message.partition),
        "source_offset": int(message.offset),
        "key": message.key if isinstance(message.key, bytes) else None,
        "payload": message.value if isinstance(message.value, bytes) else b"",
        "processor": processor,
        "error_type": type(exc).__name__,
        "error": str(exc),
        "errors": errors or [str(exc)],
    }
    DEAD_LETTERS.labels(processor, message.topic).inc()
    log.warning("%s: %s@%s/%s to DLQ: %s", processor, message.topic, message.partition, message.offset, exc)
    key = message.key.decode(errors="replace") if isinstance(message.key, bytes) else f"{message.topic}"
    await send(app, rt, rt.topics.dlq, "DeadLetter", value, key)


def decode_or_error(rt: Runtime, data: Any, expect: str) -> dict[str, Any] | SchemaError:
    """The decoded event, or the error to dead-letter it with."""
    try:
        return rt.codec.decode(data, expect=expect).value
    except SchemaError as exc:
        return exc
