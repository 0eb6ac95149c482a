"""What every processor shares: raw topics, decoding and checking with DLQ fallback, producing
events, and the dead letter (bounded, whatever the record's size)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import faust

from aios.schemas import limits
from aios.schemas.checks import check
from aios.schemas.errors import SchemaError
from aios.schemas.events import envelope
from aios.streams.engine.failures import Backoff, Verdict, verdict_for
from aios.streams.engine.runtime import Runtime
from aios.streams.metrics import DEAD_LETTERS
from aios.streams.tracing import faust_headers_for

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


async def send(app: faust.App, rt: Runtime, topic: str, record: str, value: Mapping[str, Any],
               key: str) -> Awaitable[Any]:
    """Hand an event to the producer; faust flushes it before the input offset is committed.

    Returns the delivery future, for a processor that must know an effect is durable before it
    records state (the orchestrator). Straight to the producer: faust's Topic/Channel layer adds
    nothing for pre-encoded bytes and was a large share of the agent's per-task CPU. The record
    carries the traceparent of the span it is produced in (streams/tracing.py).
    """
    data = rt.codec.encode(record, value, topic)
    return await app.producer.send(topic, key.encode(), data, partition=None, timestamp=None,
                                   headers=faust_headers_for(value))


async def dead_letter(
    app: faust.App, rt: Runtime, message: Any, processor: str, exc: Exception, errors: list[str] | None = None
) -> None:
    """Keep the original bytes of a faust message and the reason on the DLQ; the stream goes on."""
    await send_dead_letter(app, rt, message.topic, int(message.partition), int(message.offset),
                           message.key, message.value, processor, exc, errors)


async def send_dead_letter(
    app: faust.App, rt: Runtime, topic: str, partition: int, offset: int, key: Any, payload: Any,
    processor: str, exc: Exception, errors: list[str] | None = None,
) -> None:
    value = dead_letter_event(topic, partition, offset, key, payload, processor, exc, errors)
    dlq_key = key.decode(errors="replace") if isinstance(key, bytes) else topic
    await send(app, rt, rt.topics.dlq, "DeadLetter", value, dlq_key)


def dead_letter_event(
    topic: str, partition: int, offset: int, key: Any, payload: Any, processor: str, exc: Exception,
    errors: list[str] | None = None,
) -> dict[str, Any]:
    """The DeadLetter for a record: its original bytes, where it came from, and why it failed.

    Bounded whatever the record: a payload over ``MAX_DEAD_LETTER_PAYLOAD_BYTES`` is cut (and the
    letter says so), and so are the reasons, so the letter of a record at the size limit still fits
    on the DLQ.
    """
    reason = limits.cut(str(exc), limits.MAX_ERROR_CHARS)
    reasons = [limits.cut(e, limits.MAX_ERROR_CHARS) for e in (errors or [reason])[:limits.MAX_DEAD_LETTER_ERRORS]]
    data = payload if isinstance(payload, bytes) else b""
    if len(data) > limits.MAX_DEAD_LETTER_PAYLOAD_BYTES:
        reasons.append(f"payload cut to its first {limits.MAX_DEAD_LETTER_PAYLOAD_BYTES} of {len(data)} bytes")
        data = data[:limits.MAX_DEAD_LETTER_PAYLOAD_BYTES]
    raw_key = key if isinstance(key, bytes) else None
    value = {
        **envelope(),
        "source_topic": topic,
        "source_partition": partition,
        "source_offset": offset,
        "key": raw_key[:limits.MAX_DEAD_LETTER_KEY_BYTES] if raw_key is not None else None,
        "payload": data,
        "processor": processor,
        "error_type": type(exc).__name__,
        "error": reason,
        "errors": reasons,
    }
    DEAD_LETTERS.labels(processor, topic).inc()
    log.warning("%s: %s@%s/%s to DLQ: %s", processor, topic, partition, offset, exc)
    return value


def decode_or_error(rt: Runtime, data: Any, expect: str) -> dict[str, Any] | SchemaError:
    """The decoded event, checked against the shared limits (schemas/checks.py), or the error to
    dead-letter it with. A registry that cannot be reached raises (the record is not at fault)."""
    try:
        value = rt.codec.decode(data, expect=expect).value
        check(expect, value)
        return value
    except SchemaError as exc:
        return exc


async def guarded(app: faust.App, rt: Runtime, message: Any, processor: str,
                  work: Callable[[], Awaitable[None]]) -> Exception | None:
    """Run ``work`` for one faust message, as ``failures.decide`` says: a failure that is the
    record's fault dead-letters it (and is returned); an unreachable server is waited out and
    ``work`` runs again; anything else is raised. None once ``work`` has succeeded."""
    backoff = Backoff()
    while True:
        try:
            await work()
            return None
        except Exception as exc:
            verdict = verdict_for(processor, exc)
            if verdict is Verdict.FATAL:
                raise
            if verdict is Verdict.DEAD_LETTER:
                await dead_letter(app, rt, message, processor, exc)
                return exc
            await backoff.wait(processor, exc)
