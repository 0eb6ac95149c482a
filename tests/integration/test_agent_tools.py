"""Tool calls through the real pipeline: the model calls a tool, the call is an AgentMessage."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from pydantic import SecretStr

from aios.agents.llm.servers.openai import FakeOpenAI, ok, tool_call
from aios.streams.kafka import EventProducer
from aios.streams.pipeline import running
from aios.streams.settings import Settings
from tests.integration.test_llm_journal import assignment, read

pytestmark = pytest.mark.integration


async def test_a_tool_call_is_recorded_on_the_messages_topic(settings: Settings) -> None:
    with FakeOpenAI() as server:
        server.script(tool_call("read_dependency_output", task_id="api"), ok("The UI calls POST /links."))
        s = settings.replace(llm="openai:gpt-4o-mini", openai_api_key=SecretStr("sk-test"),
                                        openai_base_url=server.base_url, llm_max_retries=0)
        event = {**assignment(f"t-{uuid.uuid4().hex[:8]}", "general"), "context": {"api": "POST /links -> 201"}}
        producer = EventProducer(s)
        async with running(s, ["agents"]):
            producer.send(s.kafka.topic_prefix + ".agent.general", "Assignment", event, key=event["task_id"])
            producer.flush()
            messages = await asyncio.to_thread(read, s, s.kafka.topic_prefix + ".messages", 1)
            calls = await asyncio.to_thread(read, s, s.kafka.topic_prefix + ".llm-calls", 2)
        assert len(server.requests) == 2
    (message,) = messages
    assert message["kind"] == "tool_call" and message["message_id"] == f"{event['project_id']}/{event['task_id']}:1:0:call_0"
    content = json.loads(message["content"])
    assert content == {"tool": "read_dependency_output", "arguments": {"task_id": "api"},
                       "result": "POST /links -> 201", "step": 0}
    assert sorted(c["step"] for c in calls) == [0, 1]
