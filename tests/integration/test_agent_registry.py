"""The orchestrator knows which roles have live agents (from aios.agents): a role nobody serves
is named in the project status instead of its tasks waiting in silence."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from aios.cli.agents import agent_statuses
from aios.schemas.events import envelope, now_ms
from aios.streams.engine.runtime import Runtime
from aios.streams.kafka import EventProducer, TopicReader
from aios.streams.metrics import ROLE_LIVE_AGENTS
from aios.streams.orchestration.plan import parse_plan
from aios.streams.pipeline import running
from aios.streams.readmodels.agent_registry import AgentRegistry
from aios.streams.readmodels.task_client import TaskClient, project_statuses
from aios.streams.settings import Settings
from aios.streams.topics import create_topics

pytestmark = pytest.mark.integration


async def test_a_role_without_live_agents_is_reported(settings: Settings) -> None:
    s = settings.replace(roles=("general", "qa"), heartbeat_interval_s=0.5)
    create_topics(s)
    only_general = s.replace(roles=("general",))
    plan = parse_plan(json.dumps({"project": "p", "tasks": [
        {"id": "write", "role": "general", "description": "write it"},
        {"id": "check", "role": "qa", "description": "check it"}]}), s.processing.roles)
    async with running(only_general, ["agents"], name="agents-general"), \
            running(s, ["orchestrator", "results"]):
        await asyncio.sleep(2)  # heartbeats reach aios.agents and the registry
        client = TaskClient(s)
        try:
            client.submit_plan(plan)
        finally:
            client.close()
        status: dict[str, object] = {}
        for _ in range(40):
            await asyncio.sleep(0.5)
            status = (await asyncio.to_thread(project_statuses, s)).get("p", {})
            if status and "succeeded" in str(status.get("tasks")):
                break
    tasks = {t["task_id"]: t["state"] for t in status["tasks"]}  # type: ignore[union-attr]
    assert tasks == {"write": "succeeded", "check": "dispatched"}
    assert status["notes"] == ["no live agent for role 'qa': its tasks wait"]
    assert ROLE_LIVE_AGENTS.labels("general")._value.get() >= 1
    assert ROLE_LIVE_AGENTS.labels("qa")._value.get() == 0


async def test_the_registry_says_unknown_until_it_has_read_the_topic(settings: Settings) -> None:
    registry = AgentRegistry(Runtime(settings))
    assert registry.live_roles() is None  # no false "no live agent" note before it caught up
    await registry.start()
    try:
        for _ in range(50):
            if registry.live_roles() is not None:
                break
            await asyncio.sleep(0.1)
        assert registry.live_roles() == set()  # an empty topic: caught up, nobody live
    finally:
        await registry.stop()


async def test_the_registry_thread_stops_and_is_joined_when_asked(settings: Settings) -> None:
    """Issue 16 §4: nothing is left running in a thread when the service stops, so a process ends."""
    registry = AgentRegistry(Runtime(settings))
    await registry.start()
    thread = registry._thread
    assert thread is not None and thread.is_alive()
    started = time.monotonic()
    await registry.stop()
    assert not thread.is_alive() and time.monotonic() - started < 5
    assert not [t for t in threading.enumerate() if t.name == "aios-agent-registry"]


async def test_a_clean_stop_tombstones_the_worker_and_readers_forget_it(settings: Settings) -> None:
    s = settings.replace(heartbeat_interval_s=0.3)
    registry = AgentRegistry(Runtime(s))
    await registry.start()
    try:
        async with running(s, ["agents"]) as live:
            await asyncio.sleep(1.5)
            agent_id = live.runtime.agent_id
            assert agent_id in registry.latest and registry.live_roles() == {"general"}
        for _ in range(50):  # the tombstone reaches the registry's thread
            if agent_id not in registry.latest:
                break
            await asyncio.sleep(0.1)
        assert agent_id not in registry.latest and registry.live_roles() == set()
    finally:
        await registry.stop()
    assert await asyncio.to_thread(agent_statuses, s) == []  # `aios agents` no longer lists it
    reader = TopicReader(s, s.kafka.topic_prefix + ".agents", from_beginning=True)
    try:
        last = [msg for msg, _ in reader.events_to_end(10) if (msg.key() or b"").decode() == agent_id][-1]
    finally:
        reader.close()
    assert last.value() is None  # the tombstone follows `stopped`, so compaction drops the key


async def test_the_registry_forgets_and_tombstones_an_agent_silent_for_too_long(settings: Settings) -> None:
    s = settings.replace(agent_forget_after_s=30)
    producer = EventProducer(s)
    old = {**envelope(), "timestamp": now_ms() - 60_000, "agent_id": "crashed-1", "role": "general",
           "roles": ["general"], "state": "busy", "in_flight": ["t"], "version": "0.1.0", "host": "h",
           "heartbeat_interval_ms": 5000, "started_at": None}
    producer.send(s.kafka.topic_prefix + ".agents", "AgentStatus", old, key="crashed-1")
    producer.flush()
    assert await asyncio.to_thread(agent_statuses, s) == []  # readers already leave it out
    registry = AgentRegistry(Runtime(s))
    await registry.start()
    try:
        def tombstoned() -> bool:
            reader = TopicReader(s, s.kafka.topic_prefix + ".agents", from_beginning=True)
            try:
                return any(msg.value() is None and msg.key() == b"crashed-1" for msg, _ in reader.events_to_end(5))
            finally:
                reader.close()

        for _ in range(30):
            if await asyncio.to_thread(tombstoned):
                break
            await asyncio.sleep(0.5)
        assert await asyncio.to_thread(tombstoned)
    finally:
        await registry.stop()
