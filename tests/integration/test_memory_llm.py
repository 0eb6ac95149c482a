"""Compression through an LLM, end to end on real Kafka and Redis: the memory processor folds an
over-budget window into a summary written by the configured LLM (the real OpenAI SDK against the
local wire-format fake server), records the call, and an agent's next prompt carries that summary
and the recent turns within its role's token budget."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from aios.agents.llm.servers.openai import FakeOpenAI
from aios.agents.runner import system_prompt
from aios.connectors.context.tokens import TokenCounter
from aios.streams.engine.runtime import open_context
from aios.streams.kafka import EventProducer, TopicReader
from aios.streams.pipeline import running
from aios.streams.settings import Settings
from aios.streams.topics import Topics
from tests.integration.helpers import wait_until
from tests.integration.test_memory import (
    MODEL_DIR,
    TURNS,
    delete_prefix,
    memory_event,
    produce,
    read_memory_topic,
)

pytestmark = pytest.mark.integration

BUDGET = 260  # the general role's prompt budget, in MiniLM tokens


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def llm_settings(settings: Settings, fake: FakeOpenAI) -> Settings:
    return settings.replace(llm="openai:gpt-4o-mini", openai_api_key=SecretStr("sk-test"), openai_base_url=fake.base_url, llm_max_retries=0, embedding_model_dir=MODEL_DIR, context_window_tokens=120, context_summary_tokens=80, role_prompt_tokens={"general": BUDGET})


def read_topic(settings: Settings, topic: str) -> list[dict[str, Any]]:
    reader = TopicReader(settings, topic, from_beginning=True)
    try:
        return [d.value for _, d in reader.events(timeout_s=3) if not isinstance(d, Exception)]
    finally:
        reader.close()


async def assign(s: Settings, description: str, project: str) -> dict[str, Any]:
    task_id = uuid.uuid4().hex
    now = int(time.time() * 1000)
    producer = EventProducer(s)
    producer.send(Topics.from_settings(s).role("general"), "Assignment", {
        "event_id": uuid.uuid4().hex, "timestamp": now, "trace_id": "t", "task_id": task_id,
        "project_id": project, "role": "general", "description": description, "submitted_at": now,
    }, key=task_id)
    producer.flush()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for attempt in await asyncio.to_thread(read_topic, s, Topics.from_settings(s).attempts):
            if attempt["task_id"] == task_id and attempt["status"] != "started":  # its outcome, not its pickup
                return attempt
    raise AssertionError("no attempt result within 60s")


async def test_the_llm_summarises_and_the_next_prompt_carries_summary_and_recent_turns(
        llm_settings: Settings, fake: FakeOpenAI) -> None:
    s = llm_settings
    counter = TokenCounter.from_model_dir(MODEL_DIR)
    produce(s, [memory_event(s.kafka.topic_prefix, n, t, tokens=counter.count(t)) for n, t in enumerate(TURNS)])
    context = open_context(s)
    try:
        async with running(s, ["memory", "agents"]):
            async def summarised() -> bool:
                window = await context.read("project", "proj-mem")
                return bool(window.turns) and window.turns[-1]["content"] == TURNS[-1] and (
                    window.summary is not None)
            await wait_until(summarised)
            await asyncio.sleep(1)  # any later fold of the same batch lands too
            window = await context.read("project", "proj-mem")
            assert window.summary is not None
            summary = window.summary["content"]
            # The fake's default reply restates the start of the request it answered: the summary prompt.
            assert summary.startswith("fake-openai reply to: Fold these turns into the running summary")
            summary_calls = [r for r in fake.requests if r.body["messages"][0]["content"].startswith("You maintain")]
            assert summary_calls and all(r.body["max_completion_tokens"] == 80 for r in summary_calls)
            assert TURNS[0].split(".")[0] in summary_calls[0].body["messages"][1]["content"]

            result = await assign(s, "Write the ledger migration plan", "proj-mem")
            assert result["status"] == "succeeded"

        events = read_memory_topic(s)
        stored = [e for e in events if e["kind"] == "summary"]
        assert summary in [e["content"] for e in stored]  # the agent's own turn may fold once more after it
        assert {e["speaker"] for e in stored} == {"memory:openai:gpt-4o-mini"}
        calls = [c for c in read_topic(s, Topics.from_settings(s).llm_calls) if c["strategy"] == "memory-summary"]
        assert len(calls) == len(stored) and calls[0]["model"] == "gpt-4o-mini" and calls[0]["task_id"] is None

        agent_calls = [r.body for r in fake.requests if r.body["messages"][0]["content"] == system_prompt("general")]
        assert len(agent_calls) == 1
        system, user = (m["content"] for m in agent_calls[0]["messages"])
        assert f"Summary of earlier context:\n{summary}" in user
        assert TURNS[-1] in user and "Recent context (oldest first):" in user
        assert counter.count(system) + counter.count(user) <= BUDGET
    finally:
        await delete_prefix(context.redis, s.kafka.topic_prefix)
        await context.aclose()


async def test_a_failing_llm_folds_into_the_labelled_extractive_summary(llm_settings: Settings,
                                                                        fake: FakeOpenAI) -> None:
    from aios.agents.llm.servers.openai import status

    s = llm_settings
    fake.script(*[status(500)] * 50)
    counter = TokenCounter.from_model_dir(MODEL_DIR)
    produce(s, [memory_event(s.kafka.topic_prefix, n, t, tokens=counter.count(t)) for n, t in enumerate(TURNS)])
    context = open_context(s)
    try:
        async with running(s, ["memory"]):
            async def summarised() -> bool:
                window = await context.read("project", "proj-mem")
                return bool(window.turns) and window.turns[-1]["content"] == TURNS[-1] and (
                    window.summary is not None)
            await wait_until(summarised)
        window = await context.read("project", "proj-mem")
        assert window.summary is not None and window.summary["content"].startswith("[extractive summary]")
        assert fake.requests, "the LLM was asked first"
        stored = [e for e in read_memory_topic(s) if e["kind"] == "summary"]
        assert stored and {e["speaker"] for e in stored} == {"memory"}
    finally:
        await delete_prefix(context.redis, s.kafka.topic_prefix)
        await context.aclose()
