"""LLM answers are journaled by (task, attempt, step) in Redis: a redelivered assignment replays
them instead of calling the LLM again (issue 3 §6), on the real pipeline and the real SDK."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import pytest
import redis
from pydantic import SecretStr

from aios.agents.llm.servers.openai import FakeOpenAI, ok
from aios.connectors.context.journal import LlmJournal, journal_key
from aios.connectors.errors import StoreUnavailableError
from aios.schemas.events import envelope
from aios.streams.kafka import EventProducer, TopicReader
from aios.streams.pipeline import running
from aios.streams.settings import Settings
from aios.streams.topics import create_topics

pytestmark = pytest.mark.integration
GOOD_QA = json.dumps({"summary": "one case", "test_cases": [{"name": "empty cart", "expected": "400"}]})


def assignment(task_id: str, role: str) -> dict[str, Any]:
    return {**envelope(), "task_id": task_id, "project_id": "journal", "role": role,
            "description": "Plan the tests of the cart", "attempt": 1, "priority": 0, "privacy": "normal",
            "strategy": None, "context": {}, "submitted_at": int(time.time() * 1000)}


def read(settings: Settings, topic: str, want: int, timeout_s: float = 30) -> list[dict[str, Any]]:
    reader = TopicReader(settings, topic, from_beginning=True)
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(found) < want and time.monotonic() < deadline:
            msg = reader.poll(0.5)
            if msg is not None:
                found.append(reader.codec.decode(msg.value()).value)
    finally:
        reader.close()
    return found


async def test_a_redelivered_assignment_never_calls_the_llm_again(settings: Settings) -> None:
    s = settings.replace(roles=("qa",))
    create_topics(s)
    with FakeOpenAI() as server:
        # Step 0 breaks the qa contract, step 1 meets it: two calls, both journaled.
        server.script(ok("some tests, not JSON"), ok(GOOD_QA))
        s = s.replace(llm="openai:gpt-4o-mini", openai_api_key=SecretStr("sk-test"),
                                 openai_base_url=server.base_url, llm_max_retries=0)
        event = assignment(f"t-{uuid.uuid4().hex[:8]}", "qa")
        producer = EventProducer(s)
        async with running(s, ["agents"]):
            for _ in range(2):  # the same assignment, delivered twice
                producer.send(s.kafka.topic_prefix + ".agent.qa", "Assignment", event, key=event["task_id"])
                producer.flush()
            calls = await asyncio.to_thread(read, s, s.kafka.topic_prefix + ".llm-calls", 4)
            attempts = [a for a in await asyncio.to_thread(read, s, s.kafka.topic_prefix + ".attempts", 4)
                        if a["status"] != "started"]  # the pickups go to the orchestrator too
        requests = server.requests
    task = f"{event['project_id']}/{event['task_id']}"
    assert len(requests) == 2, "one request per (task, attempt, step), whatever the deliveries"
    assert sorted(c["call_id"] for c in calls) == [f"{task}:1:0", f"{task}:1:0", f"{task}:1:1", f"{task}:1:1"]
    by_id: dict[str, set[str]] = {}
    for c in calls:
        by_id.setdefault(c["call_id"], set()).add(c["event_id"])
        assert c["strategy"] == "cost" and c["fallback_chain"] == ["openai:gpt-4o-mini"]
    assert all(len(ids) == 1 for ids in by_id.values()), "a replayed call is the same event"
    assert [a["status"] for a in attempts] == ["succeeded", "succeeded"]
    assert attempts[0]["output"] == attempts[1]["output"] == json.dumps(json.loads(GOOD_QA), separators=(",", ":"))
    assert attempts[0]["cost_usd"] == attempts[1]["cost_usd"] > 0
    ttl = redis.Redis.from_url(s.stores.redis_url).ttl(journal_key(s.kafka.topic_prefix, task, 1, 0))
    assert 0 < ttl <= s.llm.journal_ttl_s


async def test_the_journal_keeps_the_first_record_and_expires(settings: Settings) -> None:
    journal = LlmJournal.from_url(settings.stores.redis_url, prefix=settings.kafka.topic_prefix, ttl_s=60)
    try:
        assert await journal.get("t", 1, 0) is None
        await journal.put("t", 1, 0, {"text": "first"})
        await journal.put("t", 1, 0, {"text": "second"})  # a concurrent duplicate does not overwrite
        assert await journal.get("t", 1, 0) == {"text": "first"}
        assert await journal.get("t", 2, 0) is None
        assert 0 < redis.Redis.from_url(settings.stores.redis_url).ttl(journal_key(settings.kafka.topic_prefix, "t", 1, 0)) <= 60
    finally:
        await journal.aclose()
    with pytest.raises(ValueError, match="TTL"):
        LlmJournal.from_url(settings.stores.redis_url, prefix="x", ttl_s=0)


async def test_an_unreachable_redis_is_a_store_error() -> None:
    journal = LlmJournal.from_url("redis://127.0.0.1:1/0", prefix="x", ttl_s=60)
    try:
        with pytest.raises(StoreUnavailableError, match="LLM journal"):
            await journal.get("t", 1, 0)
    finally:
        await journal.aclose()
