"""The orchestrator knows which roles have live agents (from aios.agents): a role nobody serves
is named in the project status instead of its tasks waiting in silence."""

from __future__ import annotations

import asyncio
import json

import pytest

from aios.streams.engine.runtime import Runtime
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
