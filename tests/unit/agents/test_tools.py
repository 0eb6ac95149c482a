"""Function calling: the read-only tools, the bounded tool loop, and both vendors' wire formats."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aios.agents.llm.anthropic_provider import AnthropicProvider
from aios.agents.llm.base import ToolCall
from aios.agents.llm.offline import OfflineProvider
from aios.agents.llm.openai_provider import OpenAIProvider
from aios.agents.llm.servers import anthropic as anthropic_server
from aios.agents.llm.servers import openai as openai_server
from aios.agents.llm.servers.anthropic import FakeAnthropic
from aios.agents.llm.servers.openai import FakeOpenAI, ok, tool_call
from aios.agents.runner import AgentTask, run_task
from aios.agents.tools import MAX_TOOL_ROUNDS, PAGE_CHARS, ToolContext, read_only_tools
from aios.schemas.limits import MAX_TOOL_RESULT_CHARS as MAX_RESULT_CHARS
from aios.schemas.limits import excerpt

DEP = "Schema: orders(id, total) " + "x" * 50
TASK = AgentTask("t-2", "p", "general", "Implement the orders endpoint", context={"t-1": DEP})


class MemoryJournal:
    def __init__(self) -> None:
        self.records: dict[tuple[str, int, int], Mapping[str, Any]] = {}

    async def get(self, task_id: str, attempt: int, step: int) -> Mapping[str, Any] | None:
        return self.records.get((task_id, attempt, step))

    async def put(self, task_id: str, attempt: int, step: int, record: Mapping[str, Any]) -> None:
        self.records.setdefault((task_id, attempt, step), record)


async def test_openai_tool_call_then_final_answer(
    fake_openai: FakeOpenAI, make_openai: Callable[..., OpenAIProvider]
) -> None:
    fake_openai.script(tool_call("read_dependency_output", task_id="t-1"), ok("done with the schema"))
    outcome = await run_task(make_openai(), TASK, tools=read_only_tools())
    assert outcome.ok and outcome.output == "done with the schema"
    assert [(r.step, r.call.name, r.result) for r in outcome.tools] == [(0, "read_dependency_output", DEP)]
    first, second = (r.body for r in fake_openai.requests)
    assert [t["function"]["name"] for t in first["tools"]] == ["read_dependency_output", "search_memory"]
    asked, answered = second["messages"][-2:]
    assert asked["tool_calls"][0]["function"] == {"name": "read_dependency_output", "arguments": '{"task_id": "t-1"}'}
    assert answered == {"role": "tool", "tool_call_id": "call_0", "content": DEP}
    assert [c.step for c in outcome.calls] == [0, 1]


async def test_anthropic_tool_use_then_final_answer(
    fake_anthropic: FakeAnthropic, make_anthropic: Callable[..., AnthropicProvider]
) -> None:
    fake_anthropic.script(anthropic_server.tool_call("search_memory", query="orders", top_k=2),
                          anthropic_server.ok("answered"))

    async def search(query: str, top_k: int) -> Sequence[str]:
        return [f"memory about {query}"] * top_k

    outcome = await run_task(make_anthropic(), TASK, tools=read_only_tools(), search=search)
    assert outcome.ok and outcome.output == "answered"
    assert outcome.tools[0].call == ToolCall("toolu_0", "search_memory", {"query": "orders", "top_k": 2})
    first, second = (r.body for r in fake_anthropic.requests)
    assert first["tools"][0]["input_schema"]["required"] == ["task_id"]
    assistant, user = second["messages"][-2:]
    assert assistant["content"] == [{"type": "tool_use", "id": "toolu_0", "name": "search_memory",
                                     "input": {"query": "orders", "top_k": 2}}]
    assert user["content"][0]["type"] == "tool_result" and user["content"][0]["tool_use_id"] == "toolu_0"
    assert "[2] memory about orders" in user["content"][0]["content"]


async def test_the_tool_loop_is_bounded(fake_openai: FakeOpenAI, make_openai: Callable[..., OpenAIProvider]) -> None:
    fake_openai.script(*[tool_call("read_dependency_output", task_id="t-1")] * MAX_TOOL_ROUNDS, ok("finally"))
    outcome = await run_task(make_openai(), TASK, tools=read_only_tools())
    assert outcome.ok and outcome.output == "finally"
    assert len(fake_openai.requests) == MAX_TOOL_ROUNDS + 1
    assert "tools" not in fake_openai.requests[-1].body, "the last round must answer"


async def test_a_replay_reuses_every_step_including_tool_rounds(
    fake_openai: FakeOpenAI, make_openai: Callable[..., OpenAIProvider]
) -> None:
    fake_openai.script(tool_call("read_dependency_output", task_id="t-1"), ok("done"))
    journal = MemoryJournal()
    first = await run_task(make_openai(), TASK, tools=read_only_tools(), journal=journal)
    again = await run_task(make_openai(), TASK, tools=read_only_tools(), journal=journal)
    assert len(fake_openai.requests) == 2, "the replay called nothing"
    assert again.output == first.output and all(c.replayed for c in again.calls)
    assert [r.call for r in again.tools] == [r.call for r in first.tools]


async def test_bad_calls_are_answered_with_what_was_wrong() -> None:
    tools = read_only_tools()
    ctx = ToolContext({"t-1": "y" * (MAX_RESULT_CHARS + 100)})
    assert "no tool 'rm_rf'" in await tools.run(ToolCall("1", "rm_rf", {}), ctx)
    assert "bad arguments" in await tools.run(ToolCall("2", "read_dependency_output", {"id": "t-1"}), ctx)
    assert "dependencies: t-1" in await tools.run(ToolCall("3", "read_dependency_output", {"task_id": "zz"}), ctx)
    assert "not available" in await tools.run(ToolCall("4", "search_memory", {"query": "x"}), ctx)
    long = await tools.run(ToolCall("5", "read_dependency_output", {"task_id": "t-1"}), ctx)
    assert long.startswith(f"[characters 0-{PAGE_CHARS} of {MAX_RESULT_CHARS + 100}; call again with "
                           f"offset={PAGE_CHARS} for more]")
    rest = await tools.run(ToolCall("6", "read_dependency_output", {"task_id": "t-1", "offset": PAGE_CHARS}), ctx)
    assert rest.startswith(f"[characters {PAGE_CHARS}-{MAX_RESULT_CHARS + 100} of {MAX_RESULT_CHARS + 100}]")
    assert len(rest.split("\n", 1)[1]) == MAX_RESULT_CHARS + 100 - PAGE_CHARS


async def test_an_excerpt_is_read_whole_through_its_reference() -> None:
    whole = "z" * 50_000
    cut = excerpt(whole, 1_000, "kafka://p.attempts/0/7")
    asked: list[tuple[str, str]] = []

    async def fetch(task_id: str, ref: str) -> str | None:
        asked.append((task_id, ref))
        return whole if ref == "kafka://p.attempts/0/7" else None

    tools = read_only_tools()
    page = await tools.run(ToolCall("1", "read_dependency_output", {"task_id": "t-1", "offset": 49_000}),
                           ToolContext({"t-1": cut}, fetch=fetch))
    assert asked == [("t-1", "kafka://p.attempts/0/7")]
    assert page == "[characters 49000-50000 of 50000]\n" + "z" * 1_000
    # No reader (or a reference it cannot follow): the excerpt is what there is.
    alone = await tools.run(ToolCall("2", "read_dependency_output", {"task_id": "t-1"}), ToolContext({"t-1": cut}))
    assert alone == cut and len(cut.encode()) <= 1_000


async def test_offline_answers_are_not_journaled() -> None:
    journal = MemoryJournal()
    outcome = await run_task(OfflineProvider(), TASK, journal=journal)
    assert outcome.ok and journal.records == {}, "free and deterministic: no Redis round trips"


def nested(depth: int, leaf: str = '"t-1"') -> str:
    return "[" * depth + leaf + "]" * depth


DEEP_ARGUMENTS = '{"task_id": ' + nested(100_000) + "}"


async def test_openai_tool_arguments_100_000_levels_deep_fail_the_attempt_with_the_reason(
    fake_openai: FakeOpenAI, make_openai: Callable[..., OpenAIProvider]
) -> None:
    fake_openai.script(openai_server.raw_tool_call("read_dependency_output", DEEP_ARGUMENTS))
    outcome = await run_task(make_openai(), TASK, tools=read_only_tools())
    assert not outcome.ok and outcome.error_type == "MalformedResponseError"
    assert outcome.error is not None and "nested deeper than 64 levels" in outcome.error


async def test_anthropic_tool_input_100_000_levels_deep_fails_the_attempt_with_the_reason(
    fake_anthropic: FakeAnthropic, make_anthropic: Callable[..., AnthropicProvider]
) -> None:
    fake_anthropic.script(anthropic_server.raw_tool_call("search_memory", DEEP_ARGUMENTS))
    outcome = await run_task(make_anthropic(), TASK, tools=read_only_tools())
    assert not outcome.ok and outcome.error_type == "MalformedResponseError"
    assert outcome.error is not None and "nested deeper than 64 levels" in outcome.error


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(depth=st.integers(0, 3000), wide=st.integers(0, 300), key=st.sampled_from(["task_id", "extra"]))
async def test_deep_or_wide_arguments_are_answered_or_refused_never_a_crash(
    fake_openai: FakeOpenAI, make_openai: Callable[..., OpenAIProvider], depth: int, wide: int, key: str
) -> None:
    arguments = json.dumps({key: "@RAW@"}).replace('"@RAW@"', nested(depth, json.dumps(["t-1"] * wide)))
    too_deep = depth + 2 > 64  # the arguments object, ``depth`` levels, the leaf list
    # The server outlives the example: script only the calls this one makes.
    fake_openai.script(openai_server.raw_tool_call("read_dependency_output", arguments),
                       *([] if too_deep else [ok("done")]))
    outcome = await run_task(make_openai(), TASK, tools=read_only_tools())
    if too_deep:
        assert not outcome.ok and outcome.error is not None and "nested deeper" in outcome.error
    else:
        assert outcome.ok and outcome.output == "done" and "bad arguments" in outcome.tools[0].result


async def test_the_toolbox_refuses_arguments_nested_too_deep_whoever_built_them() -> None:
    deep: object = "t-1"
    for _ in range(100_000):  # built, not parsed: deeper than any parser would go
        deep = [deep]
    result = await read_only_tools().run(ToolCall("1", "read_dependency_output", {"task_id": deep}),
                                         ToolContext({"t-1": "x"}))
    assert result == "error: bad arguments for read_dependency_output: nested deeper than 64 levels"
