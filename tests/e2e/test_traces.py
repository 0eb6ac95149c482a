"""Traces in distributed mode (issue 18): each processor its own ``aios worker`` process, spans sent
to a real OTLP/HTTP receiver that decodes the protobuf wire format. One trace per task, whose id is
the task's trace_id, with parent/child links across the processes, the GenAI attributes, content
only where allowed, and a traceparent on every record of the task's trace on every topic."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from typing import Any

import pytest

from aios.agents.llm.servers.openai import FakeOpenAI, ok, tool_call
from aios.streams.kafka import TopicReader
from aios.streams.settings import load_settings
from aios.streams.topics import Topics
from tests.e2e.conftest import Cli
from tests.e2e.test_crash_safety import Worker
from tests.integration.otlp import OtlpReceiver, Span

pytestmark = pytest.mark.integration

SECRET_PROMPT = "zebra-orchid-prompt"
SECRET_ANSWER = "quartz-lantern-answer"
RESTRICTED_PROMPT = "hidden-walrus-restricted"
TRACEPARENT = re.compile(rb"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")


def by_id(spans: list[Span]) -> dict[str, Span]:
    return {s.span_id: s for s in spans}


def complete(trace_id: str) -> Any:
    def done(spans: list[Span]) -> bool:
        names = Counter(s.name for s in spans if s.trace_id == trace_id)
        return bool(names["submit"] and names["commit result"] and names["memory write"]
                    and names["invoke_agent general"] and names["dispatch"] >= 2
                    and any(name.startswith("chat ") for name in names))
    return done


def records_of(cli: Cli, trace_id: str) -> list[tuple[str, dict[str, Any], list[tuple[str, bytes]]]]:
    """Every record of ``trace_id`` on the task's topics: (topic, event, headers)."""
    settings = load_settings(topic_prefix=cli.env["AIOS_TOPIC_PREFIX"], kafka_bootstrap=cli.env["AIOS_KAFKA_BOOTSTRAP"])
    t = Topics.from_settings(settings)
    out = []
    for topic in (t.tasks, t.role("general"), t.attempts, t.finals, t.results, t.memory, t.llm_calls, t.messages):
        reader = TopicReader(settings, topic, from_beginning=True)
        try:
            for msg, decoded in reader.events_to_end(15):
                if isinstance(decoded, Exception) or decoded.value.get("trace_id") != trace_id:
                    continue
                out.append((topic, decoded.value, list(msg.headers() or [])))
        finally:
            reader.close()
    return out


def span_tree(trace: list[Span]) -> str:
    """The trace as indented lines (shown with ``pytest -s``: the closing note of issue 18 quotes it)."""
    children: dict[str, list[Span]] = {}
    for s in sorted(trace, key=lambda s: s.start_ns):
        children.setdefault(s.parent_id, []).append(s)
    keys = ("gen_ai.agent.name", "gen_ai.provider.name", "gen_ai.request.model", "gen_ai.usage.input_tokens",
            "gen_ai.usage.output_tokens", "aios.llm.cost_usd", "aios.llm.ttft_ms", "aios.llm.strategy",
            "aios.llm.fallbacks", "gen_ai.tool.name", "aios.event", "aios.status", "aios.memory.kind")
    lines: list[str] = []
    stack = [(s, 0) for s in reversed(children.get("", []))]
    while stack:
        s, depth = stack.pop()
        shown = {k.split(".")[-1]: s.attributes[k] for k in keys if k in s.attributes}
        lines.append(f"{'  ' * depth}{s.name} [{s.service}, {s.kind}, {s.ms:.1f} ms] {shown}")
        stack += [(c, depth + 1) for c in reversed(children.get(s.span_id, []))]
    return "\n".join(lines)


def stored_story(cli: Cli, history: Worker, trace_id: str) -> dict[str, Any]:
    """``aios trace --json`` once the history holds the task's result (the embedded store is one
    process's at a time: the history worker is stopped while the CLI reads it)."""
    for _ in range(5):
        time.sleep(2)
        history.stop()
        doc: dict[str, Any] = cli.json("trace", trace_id)
        if any(e["event_type"] == "TaskResult" and e["topic"].endswith(".results") for e in doc["events"]):
            return doc
        history.start()
    raise AssertionError(f"the history never held the result of {trace_id}: {doc}")


def test_one_trace_per_task_across_worker_processes(cli: Cli) -> None:
    with OtlpReceiver() as otlp, FakeOpenAI() as llm:
        cli.env.update({"AIOS_LLM": "local:llama3.1:8b", "AIOS_LOCAL_LLM_BASE_URL": llm.base_url,
                        "AIOS_LLM_MAX_RETRIES": "0", "AIOS_OTLP_ENDPOINT": otlp.endpoint,
                        "AIOS_OTEL_CAPTURE_CONTENT": "1"})
        cli.run("topics", "create")
        workers = [Worker(cli, name) for name in ("orchestrator", "results", "agents", "memory", "history")]
        try:
            for w in workers:
                w.start()
            llm.script(tool_call("search_memory", query="earlier notes"), ok(SECRET_ANSWER))
            normal = cli.json("submit", f"summarise {SECRET_PROMPT}", "--project", "traced", "--wait",
                              "--timeout", "90")
            assert normal["result"]["status"] == "succeeded", normal
            restricted = cli.json("submit", f"keep {RESTRICTED_PROMPT} private", "--project", "traced",
                                  "--privacy", "restricted", "--wait", "--timeout", "90")
            assert restricted["result"]["status"] == "succeeded", restricted
            otlp.wait_for(complete(normal["trace_id"]))
            spans = otlp.wait_for(complete(restricted["trace_id"]))  # all spans so far: both traces
            story = stored_story(cli, workers[-1], normal["trace_id"])
        finally:
            for w in workers:
                w.stop()
        records = records_of(cli, normal["trace_id"])
    trace = [s for s in spans if s.trace_id == normal["trace_id"]]
    ids = by_id(trace)
    print(f"trace {normal['trace_id']}:\n{span_tree(trace)}")

    # One trace: a single root, the submit, in the CLI's process; every other span's parent is in it.
    roots = [s for s in trace if not s.parent_id]
    assert [(s.name, s.service, s.kind) for s in roots] == [("submit", "aios-submit", "producer")]
    assert all(s.parent_id in ids for s in trace if s.parent_id), "a span's parent is missing from the trace"
    assert {s.service for s in trace} >= {"aios-submit", "aios-orchestrator", "aios-agents", "aios-memory",
                                          "aios-results"}

    def parent(s: Span) -> Span:
        return ids[s.parent_id]

    # submit -> dispatch -> invoke_agent -> chat / execute_tool; invoke_agent -> memory write and the
    # attempt's dispatch -> commit result.
    agent = next(s for s in trace if s.name == "invoke_agent general")
    assert parent(agent).name == "dispatch" and parent(parent(agent)).name == "submit"
    assert agent.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert agent.attributes["gen_ai.agent.name"] == "general"
    assert agent.attributes["gen_ai.conversation.id"] == "traced"
    assert agent.attributes["aios.status"] == "succeeded" and agent.attributes["aios.attempt"] == 1
    chats = sorted((s for s in trace if s.name.startswith("chat ")), key=lambda s: s.start_ns)
    assert [c.name for c in chats] == ["chat llama3.1:8b"] * 2
    for chat in chats:
        a = chat.attributes
        assert parent(chat) is agent and chat.kind == "client"
        assert a["gen_ai.provider.name"] == "local" and a["gen_ai.request.model"] == "llama3.1:8b"
        assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] >= 0
        assert a["aios.llm.strategy"] == "cost" and a["aios.llm.fallbacks"] == ["local:llama3.1:8b"]
        assert "aios.llm.cost_usd" in a and a["aios.llm.latency_ms"] > 0
    assert chats[0].attributes["gen_ai.response.finish_reasons"] == ["tool_calls"]
    assert chats[1].attributes["gen_ai.usage.output_tokens"] > 0
    assert 0 <= chats[1].attributes["aios.llm.ttft_ms"] <= chats[1].attributes["aios.llm.latency_ms"]
    tool = next(s for s in trace if s.name == "execute_tool search_memory")
    assert parent(tool) is agent and tool.attributes["gen_ai.tool.name"] == "search_memory"
    assert chats[0].end_ns <= tool.start_ns <= chats[1].start_ns
    write = next(s for s in trace if s.name == "memory write")
    assert parent(write) is agent
    commit = next(s for s in trace if s.name == "commit result")
    assert parent(commit).name == "dispatch" and parent(parent(commit)) is agent
    assert commit.attributes["aios.status"] == "succeeded"

    # Content was asked for (AIOS_OTEL_CAPTURE_CONTENT=1): on the normal task's chats only.
    assert SECRET_PROMPT in chats[0].attributes["gen_ai.input.messages"]
    assert SECRET_ANSWER in chats[1].attributes["gen_ai.output.messages"]
    hidden = [s for s in spans if s.trace_id == restricted["trace_id"]]
    assert any(s.name.startswith("chat ") for s in hidden)
    leaks = [(s.name, k) for s in hidden for k, v in s.attributes.items() if RESTRICTED_PROMPT in json.dumps(v)]
    assert not leaks, f"a restricted task's content reached spans: {leaks}"
    assert not any("gen_ai.input.messages" in s.attributes for s in hidden)

    # Every record of the trace carries a traceparent of that trace, naming a span that was recorded.
    assert {topic.rsplit(".", 1)[-1] for topic, _, _ in records} >= {"tasks", "general", "attempts", "finals",
                                                                    "results", "memory", "llm-calls"}
    all_ids = {s.span_id for s in spans}
    for topic, event, headers in records:
        values = [v for k, v in headers if k == "traceparent"]
        assert len(values) == 1, (topic, event["event_id"], headers)
        match = TRACEPARENT.fullmatch(values[0])
        assert match is not None and match.group(1).decode() == normal["trace_id"], (topic, values)
        assert match.group(2).decode() in all_ids, f"{topic}: its traceparent names no recorded span"

    # `aios trace` tells the same story from the history alone: every event in order, with the process
    # that produced it, its partition and offset, the LLM and tool calls, and the time between hops.
    events = story["events"]
    assert story["trace_ids"] == [normal["trace_id"]] and story["attempts"][0]["attempt"] == 1
    assert [e["ts_ms"] for e in events] == sorted(e["ts_ms"] for e in events)
    assert all(e["gap_ms"] >= 0 and e["partition"] >= 0 and e["offset"] >= 0 for e in events)

    def made_by(event_type: str, topic_end: str) -> set[str]:
        return {e["producer"].split("@")[0] for e in events
                if e["event_type"] == event_type and e["topic"].endswith(topic_end)}
    assert made_by("Task", ".tasks") == {"submit"}
    assert made_by("Assignment", ".general") == {"orchestrator"}
    assert made_by("TaskResult", ".attempts") == {"agents"}
    assert made_by("LlmCall", ".llm-calls") == {"agents"}
    assert made_by("TaskResult", ".results") == {"results"}
    calls = [e for e in events if e["event_type"] == "LlmCall"]
    assert [c["detail"]["step"] for c in calls] == [0, 1]
    assert all(c["detail"]["input_tokens"] > 0 and c["detail"]["latency_ms"] > 0 for c in calls)
    tools = [e for e in events if e["event_type"] == "AgentMessage"]
    assert [t["detail"]["tool"] for t in tools] == ["search_memory"] and tools[0]["attempt"] == 1
    spans_by_id = {s.span_id for s in spans}
    assert all(e["traceparent"].split("-")[2] in spans_by_id for e in events if e["traceparent"])
    human = cli.run("trace", normal["task_id"]).stdout
    assert "attempt 1" in human and "chat llama3.1:8b" in human and "execute_tool search_memory" in human
