"""The spans of an agent's work, named as OpenTelemetry's GenAI conventions name them: ``chat {model}``
per LLM call, ``execute_tool {name}`` per tool call.

Only the OpenTelemetry API is used here: without an SDK (``streams`` installs one when
``AIOS_OTLP_ENDPOINT`` is set) every span is a no-op that costs a context switch, and attributes are
not even built (``is_recording``). Prompts, answers and tool arguments go on spans only when the
caller says so (``capture``): the worker allows it for tasks that are not restricted, and only when
AIOS_OTEL_CAPTURE_CONTENT is on.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from aios.agents.llm.base import ChatMessage, ToolCall

if TYPE_CHECKING:
    from aios.agents.runner import CallRecord

_tracer = trace.get_tracer("aios.agents")
MAX_NAME_CHARS = 64  # a tool name comes from the model: it is input


@contextmanager
def chat_span() -> Iterator[Span]:
    """The span of one LLM call (named ``chat {model}`` once the router has chosen the model)."""
    with _tracer.start_as_current_span("chat", kind=SpanKind.CLIENT, record_exception=False,
                                       set_status_on_exception=False) as span:
        try:
            yield span
        except BaseException as exc:
            if span.is_recording():
                span.set_attribute("error.type", type(exc).__name__)
                span.set_status(Status(StatusCode.ERROR, str(exc)[:500]))
            raise


def describe_call(span: Span, record: CallRecord, messages: Sequence[ChatMessage], *, max_tokens: int,
                  temperature: float, capture: bool) -> None:
    """The GenAI attributes of a finished call: model, usage, cost, time to first token, routing."""
    if not span.is_recording():
        return
    r = record.response
    span.update_name(f"chat {r.model}")
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": r.provider,
        "gen_ai.request.model": r.model,
        "gen_ai.response.model": r.model,
        "gen_ai.request.max_tokens": max_tokens,
        "gen_ai.request.temperature": temperature,
        "gen_ai.usage.input_tokens": r.usage.input_tokens,
        "gen_ai.usage.output_tokens": r.usage.output_tokens,
        "gen_ai.usage.cache_read.input_tokens": r.usage.cached_input_tokens,
        "aios.llm.step": record.step,
        "aios.llm.deployment": record.deployment,
        "aios.llm.strategy": record.strategy,
        "aios.llm.fallbacks": list(record.fallback_chain),
        "aios.llm.cost_usd": record.cost_usd,
        "aios.llm.latency_ms": r.latency_ms,
        "aios.llm.queue_ms": record.queue_ms,
        "aios.llm.replayed": record.replayed,
        "aios.llm.redacted": record.redacted,
    }
    if r.ttft_ms is not None:
        attributes["aios.llm.ttft_ms"] = r.ttft_ms
    if r.tool_calls:
        attributes["gen_ai.response.finish_reasons"] = ["tool_calls"]
    if capture:
        attributes["gen_ai.input.messages"] = _messages_json(messages)
        attributes["gen_ai.output.messages"] = json.dumps(
            [{"role": "assistant", "parts": _parts(r.text, r.tool_calls)}], ensure_ascii=False)
    span.set_attributes(attributes)


@contextmanager
def tool_span(call: ToolCall) -> Iterator[Span]:
    """The span of one tool call the model asked for."""
    name = call.name[:MAX_NAME_CHARS]
    with _tracer.start_as_current_span(f"execute_tool {name}", kind=SpanKind.INTERNAL) as span:
        if span.is_recording():
            span.set_attributes({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name,
                                 "gen_ai.tool.call.id": call.id[:MAX_NAME_CHARS], "gen_ai.tool.type": "function"})
        yield span


def describe_tool(span: Span, call: ToolCall, result: str, *, capture: bool) -> None:
    if not span.is_recording():
        return
    span.set_attribute("aios.tool.result_chars", len(result))
    if result.startswith("error:"):
        span.set_attribute("error.type", "tool_error")
    if capture:
        span.set_attribute("gen_ai.tool.call.arguments", json.dumps(dict(call.arguments), ensure_ascii=False))
        span.set_attribute("gen_ai.tool.call.result", result)


def _messages_json(messages: Sequence[ChatMessage]) -> str:
    return json.dumps([{"role": m.role, "parts": _parts(m.content, m.tool_calls)} for m in messages],
                      ensure_ascii=False)


def _parts(text: str, calls: Sequence[ToolCall]) -> list[Mapping[str, Any]]:
    parts: list[Mapping[str, Any]] = [{"type": "text", "content": text}] if text else []
    parts += [{"type": "tool_call", "id": c.id, "name": c.name, "arguments": dict(c.arguments)} for c in calls]
    return parts
