"""Traces across Kafka hops: W3C ``traceparent`` on every record, and the OpenTelemetry SDK when
``AIOS_OTLP_ENDPOINT`` is set.

An AIOS event's ``trace_id`` *is* its trace: the traceparent's trace id is the event's ``trace_id``
when that is 32 hex digits (every id AIOS makes is), and a hash of it otherwise, so a span found in a
tracing backend and ``aios trace`` name the same id. Records always carry a traceparent (formatting
one costs a microsecond or two); spans are recorded only when an endpoint is set. Unset, the SDK
is not even imported, and a processor's "span" is the record's parent context made current, so the
records it produces still point at the span that produced their input (a process without tracing
passes the trace through). ``agents/`` uses the OpenTelemetry API only; the SDK is wired here.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from aios.streams.logs import process_name
from aios.streams.settings import Settings

log = logging.getLogger("aios.tracing")

TRACEPARENT = "traceparent"
# Which process produced a record (``<process>@<host>:<pid>``): the history keeps it per offset, so
# ``aios trace`` can say where each hop ran without a tracing backend.
PROCESS_HEADER = "aios-process"
TRACER = "aios.streams"
Headers = list[tuple[str, str | bytes | None]]  # as confluent-kafka takes and gives them
HeadersIn = Headers | dict[str, str | bytes | None] | Sequence[tuple[str, bytes | str | None]] | None
_HEX32 = re.compile(r"[0-9a-f]{32}")
_PARENT = re.compile(rb"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")

# The trace id the next root span must have (the event's), read by the SDK's id generator.
_root_trace_id: ContextVar[int | None] = ContextVar("aios_root_trace_id", default=None)
_provider: Any = None  # the SDK's TracerProvider once configured (Any: the SDK is imported lazily)
_capture_content = False
_process = f"aios@{socket.gethostname()}:{os.getpid()}".encode()


def enabled() -> bool:
    """Whether this process records spans (AIOS_OTLP_ENDPOINT was set when it configured)."""
    return _provider is not None


def capture_content(privacy: str | None) -> bool:
    """Whether spans may carry a task's prompts and answers: only when AIOS_OTEL_CAPTURE_CONTENT is
    on, and never for a restricted task (nor one whose privacy is unknown)."""
    return _capture_content and (privacy or "normal") == "normal"


@lru_cache(maxsize=4096)  # a processor sees each trace a few times in a row: parse it once
def otel_trace_id(trace_id: str) -> int:
    """The W3C trace id of an AIOS ``trace_id``: itself when it is 32 lowercase hex digits (not all
    zero), else the first 16 bytes of its SHA-256 (a trace id set by a client may be anything)."""
    if _HEX32.fullmatch(trace_id):
        value = int(trace_id, 16)
        if value:
            return value
    return int.from_bytes(hashlib.sha256(trace_id.encode()).digest()[:16], "big") or 1


def traceparent(trace_id: str) -> bytes:
    """The traceparent for a record of trace ``trace_id`` produced now: the current span when it is
    of that trace, else a new parent id in that trace (a record produced outside any span)."""
    tid = otel_trace_id(trace_id)
    current = trace.get_current_span().get_span_context()
    if current.is_valid and current.trace_id == tid:
        return b"00-%032x-%016x-%02x" % (tid, current.span_id, current.trace_flags)
    return b"00-%032x-%s-01" % (tid, os.urandom(8).hex().encode())


def headers_for(value: Mapping[str, Any]) -> Headers | None:
    """Kafka headers for an event: its traceparent (None for an event without a trace id)."""
    trace_id = value.get("trace_id")
    if not isinstance(trace_id, str) or not trace_id:
        return None
    return [(TRACEPARENT, traceparent(trace_id)), (PROCESS_HEADER, _process)]


def faust_headers_for(value: Mapping[str, Any]) -> list[tuple[str, bytes]] | None:
    """``headers_for``, typed for faust's producer."""
    trace_id = value.get("trace_id")
    if not isinstance(trace_id, str) or not trace_id:
        return None
    return [(TRACEPARENT, traceparent(trace_id)), (PROCESS_HEADER, _process)]


def passed_on(headers: HeadersIn) -> Headers | None:
    """A record's traceparent, for an output that is the same record in another form (JSON egress)."""
    parent = parent_from(headers)
    if parent is None:
        return None
    return [(TRACEPARENT, b"00-%032x-%016x-%02x" % (parent.trace_id, parent.span_id, parent.trace_flags)),
            (PROCESS_HEADER, _process)]


def parent_from(headers: HeadersIn, trace_id: str | None = None) -> SpanContext | None:
    """The span context a record's traceparent names, or None when it has none that is well formed
    (or, given the event's ``trace_id``, none of that trace). Never raises: headers are input."""
    if not headers:
        return None
    pairs = headers.items() if isinstance(headers, dict) else headers  # dict, not Mapping: isinstance on an ABC is slow
    for name, raw in pairs:
        if name != TRACEPARENT or raw is None:
            continue
        data = raw.encode() if isinstance(raw, str) else raw
        match = _PARENT.fullmatch(data.strip())
        if match is None:
            return None
        tid, sid = int(match.group(1), 16), int(match.group(2), 16)
        if tid == 0 or sid == 0 or (trace_id is not None and tid != otel_trace_id(trace_id)):
            return None
        return SpanContext(tid, sid, is_remote=True, trace_flags=TraceFlags(int(match.group(3), 16) & 1))
    return None


def _parent_context(trace_id: str, parent: SpanContext | None) -> otel_context.Context:
    if parent is not None and parent.trace_id == otel_trace_id(trace_id):
        return trace.set_span_in_context(NonRecordingSpan(parent))
    return otel_context.Context()  # a root: its trace id comes from _root_trace_id


@contextmanager
def span(name: str, trace_id: str, parent: SpanContext | None = None, *, kind: SpanKind = SpanKind.INTERNAL,
         attributes: Mapping[str, Any] | None = None) -> Iterator[trace.Span]:
    """A span of trace ``trace_id``, child of ``parent`` (a record's traceparent) or a root, current
    while the block runs, so what the block produces carries it. Without tracing, only ``parent`` is
    made current (records produced in the block name it), and nothing is recorded."""
    if _provider is None:
        if parent is None:
            yield trace.INVALID_SPAN
            return
        passing = NonRecordingSpan(parent)
        attached = otel_context.attach(trace.set_span_in_context(passing))  # use_span's generator costs 3x
        try:
            yield passing
        finally:
            otel_context.detach(attached)
        return
    token = _root_trace_id.set(otel_trace_id(trace_id))
    try:
        tracer = trace.get_tracer(TRACER)
        with tracer.start_as_current_span(name, context=_parent_context(trace_id, parent), kind=kind,
                                          attributes=dict(attributes or {})) as current:
            yield current
    finally:
        _root_trace_id.reset(token)


@contextmanager
def within(parent: SpanContext | None) -> Iterator[None]:
    """Make ``parent`` current without a span of its own: what the block produces names it."""
    if parent is None or not parent.is_valid:
        yield
        return
    token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(parent)))
    try:
        yield
    finally:
        otel_context.detach(token)


def record_span(name: str, trace_id: str, parent: SpanContext | None, start_ns: int, end_ns: int, *,
                attributes: Mapping[str, Any] | None = None) -> None:
    """A span that already happened (one record's share of a batch written at once)."""
    if _provider is None:
        return
    token = _root_trace_id.set(otel_trace_id(trace_id))
    try:
        done = trace.get_tracer(TRACER).start_span(name, context=_parent_context(trace_id, parent),
                                                   attributes=dict(attributes or {}), start_time=start_ns)
        done.end(end_time=end_ns)
    finally:
        _root_trace_id.reset(token)


def submit_attributes(topic: str, record: str, value: Mapping[str, Any]) -> dict[str, Any]:
    """The attributes of a submit span: what was produced, where, for which task."""
    return {"messaging.system": "kafka", "messaging.destination.name": topic, "aios.record": record,
            "aios.project_id": value.get("project_id") or "", "aios.task_id": value.get("task_id") or "",
            "aios.event_id": value.get("event_id") or ""}


def now_ns() -> int:
    return time.time_ns()


def process_id() -> str:
    """This process, as its records' ``aios-process`` header names it."""
    return _process.decode()


def configure(settings: Settings, process: str) -> bool:
    """Name this process (its records' ``aios-process`` header) and, with AIOS_OTLP_ENDPOINT, set
    its tracer up (once; later calls keep the first setup). Returns whether spans are recorded."""
    global _provider, _capture_content, _process
    named = process_name()  # the name this process logs under (streams/logs.py), when it was given one
    process = named if named != "aios" else process
    if _process.startswith(b"aios@"):  # still the default name
        _process = f"{process}@{socket.gethostname()}:{os.getpid()}".encode()
    obs = settings.observability
    if _provider is not None or not obs.otlp_endpoint:
        return _provider is not None
    # Imported here: a process without an endpoint never loads the SDK or the exporter.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class EventTraceIds(RandomIdGenerator):
        """Roots take the trace id of their event; span ids stay random."""

        def generate_trace_id(self) -> int:
            wanted = _root_trace_id.get()
            return wanted if wanted is not None else super().generate_trace_id()

    resource = Resource.create({
        "service.name": obs.otel_service_name or f"aios-{process}",
        "service.namespace": "aios",
        "service.instance.id": f"{settings.processing.instance}-{os.getpid()}",
        "aios.topic_prefix": settings.kafka.topic_prefix,
    })
    provider = TracerProvider(resource=resource, id_generator=EventTraceIds())
    exporter = OTLPSpanExporter(endpoint=f"{obs.otlp_endpoint}/v1/traces", timeout=10)
    # A queue of several seconds of spans at the pipeline's rates: a full queue drops spans (the SDK
    # logs it), never blocks a processor.
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1000, max_queue_size=32_768,
                                                   max_export_batch_size=2048))
    trace.set_tracer_provider(provider)
    _provider, _capture_content = provider, obs.otel_capture_content
    log.info("tracing: spans of %s go to %s", process, obs.otlp_endpoint)
    return True


def flush(timeout_s: float = 5.0) -> None:
    """Export the spans still buffered (a process about to exit)."""
    if _provider is not None:
        _provider.force_flush(int(timeout_s * 1000))


__all__ = ["PROCESS_HEADER", "TRACEPARENT", "process_id", "SpanKind", "capture_content", "configure", "enabled", "flush", "faust_headers_for", "headers_for",
           "otel_trace_id", "parent_from", "passed_on", "record_span", "span", "submit_attributes", "within", "traceparent"]
