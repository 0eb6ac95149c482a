"""``aios bench tracing``: what tracing adds to each record a processor handles, with
AIOS_OTLP_ENDPOINT unset (the parent passed on, a traceparent per output) and set (a span recorded
and exported to a counting sink), beside an empty loop of the same shape, in one process."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from aios.bench.spansink import SpanSink
from aios.streams import tracing
from aios.streams.settings import Settings


def _per_record_us(records: int, work: Callable[[list[tuple[str, bytes]], dict[str, Any]], None]) -> float:
    trace_id = uuid.uuid4().hex
    inputs = [([("traceparent", tracing.traceparent(trace_id))], {"trace_id": trace_id}) for _ in range(records)]
    best = float("inf")
    for _ in range(3):  # the best of three: the machine is shared
        started = time.perf_counter()
        for headers, value in inputs:
            work(headers, value)
        best = min(best, time.perf_counter() - started)
    return round(best / records * 1e6, 3)


def _baseline(headers: list[tuple[str, bytes]], value: dict[str, Any]) -> None:
    pass


def _handle(headers: list[tuple[str, bytes]], value: dict[str, Any]) -> None:
    # What a processor does per record: continue the trace, produce one output with its traceparent.
    with tracing.span("dispatch", value["trace_id"], tracing.parent_from(headers)):
        tracing.headers_for(value)


def bench_tracing(settings: Settings, *, records: int) -> dict[str, Any]:
    if tracing.enabled():
        raise RuntimeError("tracing is already configured in this process: run the bench without AIOS_OTLP_ENDPOINT")
    baseline = _per_record_us(records, _baseline)
    off = _per_record_us(records, _handle)
    with SpanSink() as sink:
        tracing.configure(settings.replace(otlp_endpoint=sink.endpoint), "bench")
        on = _per_record_us(records, _handle)
        tracing.flush(10)
        exported = {"export_requests": sink.requests, "export_bytes": sink.bytes}
    return {"records": records, "loop_us": baseline, "unset_us": off, "set_us": on,
            "unset_over_loop_us": round(off - baseline, 3), "set_over_unset_us": round(on - off, 3), **exported}
