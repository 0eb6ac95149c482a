"""The spans of an agent's work (agents/tracing.py): GenAI names and attributes, and content only when
the caller allows it. A local SDK provider stands in for the one streams/ installs."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aios.agents import tracing
from aios.agents.llm.openai_provider import OpenAIProvider
from aios.agents.llm.servers.openai import FakeOpenAI, ok, status, tool_call
from aios.agents.runner import AgentTask, run_task
from aios.agents.tools import read_only_tools

TASK = AgentTask("t-1", "p", "general", "Describe the zebra-orchid plan")


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("aios.agents"))
    yield exporter
    provider.shutdown()


def attrs(span: ReadableSpan) -> dict[str, object]:
    return dict(span.attributes or {})


async def test_chat_and_tool_spans_carry_the_genai_attributes_and_no_content_by_default(
    spans: InMemorySpanExporter, fake_openai: FakeOpenAI, make_openai: Callable[..., OpenAIProvider]
) -> None:
    fake_openai.script(tool_call("search_memory", query="zebra"), ok("quartz-lantern"))
    outcome = await run_task(make_openai(), TASK, tools=read_only_tools())
    assert outcome.ok
    chat1, tool, chat2 = sorted(spans.get_finished_spans(), key=lambda s: s.start_time or 0)
    assert (chat1.name, tool.name, chat2.name) == ("chat gpt-4o-mini", "execute_tool search_memory", "chat gpt-4o-mini")
    a = attrs(chat2)
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == "gpt-4o-mini" and a["aios.llm.strategy"] == "cost"
    assert a["gen_ai.usage.input_tokens"] == outcome.calls[1].response.usage.input_tokens
    assert a["gen_ai.usage.output_tokens"] == outcome.calls[1].response.usage.output_tokens
    assert a["aios.llm.cost_usd"] == outcome.calls[1].cost_usd and a["aios.llm.fallbacks"] == ("openai:gpt-4o-mini",)
    assert "aios.llm.ttft_ms" in a
    assert attrs(tool)["gen_ai.tool.name"] == "search_memory" and attrs(tool)["error.type"] == "tool_error"
    everything = repr([attrs(s) for s in spans.get_finished_spans()])
    assert "zebra" not in everything and "quartz-lantern" not in everything


async def test_content_goes_on_spans_only_when_allowed(
    spans: InMemorySpanExporter, fake_openai: FakeOpenAI, make_openai: Callable[..., OpenAIProvider]
) -> None:
    fake_openai.script(ok("quartz-lantern"))
    await run_task(make_openai(), TASK, capture_content=True)
    (chat,) = spans.get_finished_spans()
    assert "zebra-orchid" in str(attrs(chat)["gen_ai.input.messages"])
    assert "quartz-lantern" in str(attrs(chat)["gen_ai.output.messages"])


async def test_a_failed_call_is_an_error_span_with_its_type(
    spans: InMemorySpanExporter, fake_openai: FakeOpenAI, make_openai: Callable[..., OpenAIProvider]
) -> None:
    fake_openai.script(status(400))
    outcome = await run_task(make_openai(), TASK)
    assert not outcome.ok
    (chat,) = spans.get_finished_spans()
    assert chat.name == "chat" and attrs(chat)["error.type"] == outcome.error_type
    assert chat.status.status_code.name == "ERROR"
