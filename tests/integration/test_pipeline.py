"""The skeleton pipeline end to end on real Kafka, Redis and chdb, in this process."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import redis

from aios.connectors.context.windows import context_key
from aios.streams.kafka import EventProducer, TopicReader
from aios.streams.pipeline import running
from aios.streams.processors import PROCESSORS
from aios.streams.settings import Settings
from tests.integration.helpers import submit_and_wait, wait_until

pytestmark = pytest.mark.integration


async def test_task_result_history_and_context(settings: Settings) -> None:
    async with running(settings, list(PROCESSORS)) as live:
        result = await submit_and_wait(settings, "Summarise the design of a rate limiter", project="proj-e2e")
        task = result["_task"]
        assert result["status"] == "succeeded"
        assert result["provider"] == "offline"
        assert result["output"].startswith("[offline provider")
        assert "rate limiter" in result["output"]
        assert result["trace_id"] == task["trace_id"]

        store = live.runtime.store
        def stored() -> dict[str, int] | None:
            c = store.counts_by_type(project_id="proj-e2e")
            # all three TaskResults: they may reach the store in different sink batches
            complete = c.get("TaskResult", 0) >= 3 and c.get("LlmCall") and c.get("MemoryEvent")
            return c if complete else None

        counts = await wait_until(stored)
        assert {k: counts[k] for k in ("Task", "Assignment", "MemoryEvent", "LlmCall")} == dict.fromkeys(
            ("Task", "Assignment", "MemoryEvent", "LlmCall"), 1)
        assert counts["TaskResult"] == 3  # the pickup (started), the agent's attempt, and the terminal result
        row = store.query(
            "SELECT e.status AS status, r.output AS output FROM aios.events AS e FINAL "  # noqa: S608 - our own hex id
            "JOIN aios.results AS r FINAL ON r.event_id = e.event_id "
            f"WHERE e.event_type = 'TaskResult' AND e.topic = '{settings.kafka.topic_prefix}.results' "
            f"AND e.task_id = '{task['task_id']}'")[0]
        assert row["status"] == "succeeded"
        assert row["output"] == result["output"]

    r = redis.Redis.from_url(settings.stores.redis_url)
    key = context_key(settings.kafka.topic_prefix, "project", "proj-e2e")
    turns = [json.loads(t) for t in r.lrange(key, 0, -1)]
    assert len(turns) == 1
    assert turns[0]["task_id"] == task["task_id"]
    assert "rate limiter" in turns[0]["content"]
    assert 0 < r.ttl(key) <= settings.memory.context_ttl_s


async def test_garbage_goes_to_dlq_and_the_stream_goes_on(settings: Settings) -> None:
    async with running(settings, ["orchestrator", "results", "agents"]):
        producer = EventProducer(settings)
        garbage = b"\x07 this is not avro \xff"
        producer.send_raw(f"{settings.kafka.topic_prefix}.tasks", garbage, key="junk")
        producer.flush()
        result = await submit_and_wait(settings, "still works after garbage")
        assert result["status"] == "succeeded"

    reader = TopicReader(settings, f"{settings.kafka.topic_prefix}.dlq", from_beginning=True)
    letters = [d.value for _, d in reader.events(timeout_s=5) if not isinstance(d, Exception)]
    reader.close()
    assert len(letters) == 1
    letter = letters[0]
    assert letter["payload"] == garbage
    assert letter["key"] == b"junk"
    assert letter["source_topic"] == f"{settings.kafka.topic_prefix}.tasks"
    assert letter["processor"] == "orchestrator"
    assert letter["error_type"] == "UndecodableError"
    assert "unknown wire format" in letter["error"]


async def test_unknown_role_fails_visibly(settings: Settings) -> None:
    async with running(settings, ["orchestrator", "results"]):
        result = await submit_and_wait(settings, "who does this?", role="astronaut")
    assert result["status"] == "failed"
    assert "unknown role 'astronaut'" in result["error"]
    assert "AIOS_ROLES" in result["error"]


async def test_replayed_memory_event_is_applied_once(settings: Settings) -> None:
    memory = {
        "event_id": "m-1", "timestamp": int(time.time() * 1000), "trace_id": "t",
        "memory_id": "task-9:1:turn", "scope": "project", "scope_id": "replay", "project_id": "replay",
        "kind": "turn", "speaker": "agent-x", "content": "hello", "task_id": "task-9", "tokens": 1,
    }
    producer = EventProducer(settings)
    for _ in range(3):  # the same memory id, delivered three times
        producer.send(f"{settings.kafka.topic_prefix}.memory", "MemoryEvent", memory, key="replay")
    producer.flush()
    async with running(settings, ["memory"]):
        key = context_key(settings.kafka.topic_prefix, "project", "replay")
        r = redis.Redis.from_url(settings.stores.redis_url)
        await wait_until(lambda: r.llen(key) >= 1)
        await asyncio.sleep(1.0)  # give duplicates time to (not) arrive
        assert r.llen(key) == 1
