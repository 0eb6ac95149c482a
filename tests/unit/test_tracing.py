"""streams/tracing.py: the traceparent every record carries, its trace id (the event's trace_id),
headers from anyone (never an exception), and no SDK at all when no endpoint is set."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from aios.schemas.errors import ConfigError
from aios.streams import tracing
from aios.streams.settings import load_settings

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_an_aios_trace_id_is_the_w3c_trace_id() -> None:
    assert tracing.otel_trace_id(TRACE) == int(TRACE, 16)
    value = tracing.traceparent(TRACE)
    assert value.startswith(f"00-{TRACE}-".encode()) and value.endswith(b"-01") and len(value) == 55


@given(st.text(max_size=200))
def test_any_trace_id_maps_to_one_valid_w3c_trace_id(trace_id: str) -> None:
    tid = tracing.otel_trace_id(trace_id)
    assert 0 < tid < 1 << 128 and tid == tracing.otel_trace_id(trace_id)
    parent = tracing.parent_from([("traceparent", tracing.traceparent(trace_id))], trace_id)
    assert parent is not None and parent.trace_id == tid


def test_a_record_produced_in_a_span_of_its_trace_names_that_span() -> None:
    current = SpanContext(int(TRACE, 16), 0xB7AD6B7169203331, is_remote=False, trace_flags=TraceFlags(1))
    with trace.use_span(NonRecordingSpan(current)):
        assert tracing.traceparent(TRACE) == PARENT
        other = tracing.traceparent("1" * 32)  # another trace's record: never this span
        assert b"b7ad6b7169203331" not in other and other.startswith(b"00-" + b"1" * 32)
        headers = tracing.headers_for({"trace_id": TRACE})
    assert headers is not None and headers[0] == ("traceparent", PARENT)
    assert headers[1][0] == tracing.PROCESS_HEADER
    assert tracing.headers_for({"event_id": "x"}) is None


def test_without_an_endpoint_a_processor_passes_its_input_parent_on() -> None:
    parent = tracing.parent_from([("traceparent", PARENT)], TRACE)
    assert parent is not None and parent.span_id == 0xB7AD6B7169203331
    with tracing.span("dispatch", TRACE, parent):
        assert tracing.traceparent(TRACE) == PARENT
    assert tracing.parent_from([("traceparent", PARENT)], "f" * 32) is None  # another trace's parent
    assert tracing.passed_on({"traceparent": PARENT}) is not None


@given(st.lists(st.tuples(st.sampled_from(["traceparent", "x", "TRACEPARENT"]),
                          st.one_of(st.none(), st.binary(max_size=80), st.text(max_size=80))), max_size=4))
def test_hostile_headers_never_raise(headers: list[tuple[str, bytes | str | None]]) -> None:
    parent = tracing.parent_from(headers, TRACE)
    assert parent is None or (parent.is_valid and parent.trace_id == int(TRACE, 16))
    tracing.passed_on(headers)


@pytest.mark.parametrize("value", [b"00-" + b"0" * 32 + b"-b7ad6b7169203331-01",
                                   b"00-0af7651916cd43dd8448eb211c80319c-" + b"0" * 16 + b"-01",
                                   b"ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                                   b"00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01"])
def test_invalid_traceparents_are_ignored(value: bytes) -> None:
    assert tracing.parent_from([("traceparent", value)]) is None


def test_a_bad_endpoint_says_what_to_give() -> None:
    with pytest.raises(ConfigError, match="OTLP/HTTP URL"):
        load_settings(otlp_endpoint="collector:4317")
    assert load_settings(otlp_endpoint="http://collector:4318/").observability.otlp_endpoint == "http://collector:4318"


def test_no_sdk_is_loaded_without_an_endpoint() -> None:
    # A fresh interpreter: a process that traces nothing never imports the tracing SDK or an exporter.
    # (redis-py imports opentelemetry.sdk.metrics by itself whenever the SDK is installed.)
    code = (
        "import sys\n"
        "from aios.streams import tracing\n"
        "from aios.streams.settings import load_settings\n"
        "import aios.streams.processors.agent_runner, aios.agents.runner\n"
        "assert not tracing.configure(load_settings(), 'agents')\n"
        f"with tracing.span('dispatch', {TRACE!r}):\n"
        f"    tracing.headers_for({{'trace_id': {TRACE!r}}})\n"
        "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry.sdk.trace', 'opentelemetry.exporter'))))\n"
    )
    env = {"PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_a_collector_that_does_not_answer_costs_spans_never_the_process() -> None:
    code = (
        "import time\n"
        "from aios.streams import tracing\n"
        "from aios.streams.settings import load_settings\n"
        "assert tracing.configure(load_settings(otlp_endpoint='http://127.0.0.1:9'), 'agents')\n"
        "started = time.monotonic()\n"
        "for _ in range(100):\n"
        f"    with tracing.span('dispatch', {TRACE!r}):\n"
        f"        assert tracing.traceparent({TRACE!r}).startswith(b'00-{TRACE}')\n"
        "assert time.monotonic() - started < 5  # spans are exported from a thread of the SDK's\n"
        "tracing.flush(2)\n"
        "print('alive')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"},
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "alive", out.stderr[-2000:]
