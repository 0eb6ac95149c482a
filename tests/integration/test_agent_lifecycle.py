"""Agent workers on the compacted agents topic: heartbeats while running, drain on stop, stale
agents marked by `aios agents`, and SIGTERM on a real `aios worker agents` process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from aios.agents.llm.servers.openai import FakeOpenAI, ok, slow_first_token
from aios.cli.agents import agent_statuses
from aios.schemas.events import envelope, now_ms
from aios.streams.errors import KafkaError
from aios.streams.kafka import EventProducer, TopicReader
from aios.streams.pipeline import running
from aios.streams.readmodels.task_client import TaskClient, build_task
from aios.streams.settings import Settings

pytestmark = pytest.mark.integration
AIOS = [sys.executable, "-c", "import sys; from aios.cli import main; sys.argv[0] = 'aios'; main()"]


def statuses(settings: Settings, timeout_s: float = 1.0) -> list[dict[str, Any]]:
    reader = TopicReader(settings, settings.kafka.topic_prefix + ".agents", from_beginning=True)
    try:
        return [d.value for _, d in reader.events_to_end(timeout_s=timeout_s + 5) if not isinstance(d, Exception)]
    finally:
        reader.close()


async def test_heartbeats_while_running_then_stopped_after_a_clean_stop(settings: Settings) -> None:
    s = settings.replace(heartbeat_interval_s=0.3)
    async with running(s, ["agents"]) as live:
        await asyncio.sleep(1.2)
        seen = await asyncio.to_thread(statuses, s)
        listed = await asyncio.to_thread(agent_statuses, s)
    agent_id = live.runtime.agent_id
    mine = [x for x in seen if x["agent_id"] == agent_id]
    assert mine[0]["state"] == "starting"
    assert [x["state"] for x in mine[1:]].count("ready") >= 3, "heartbeats every 0.3s"
    assert mine[-1]["roles"] == ["general"] and mine[-1]["host"] and mine[-1]["version"]
    assert [(a["agent_id"], a["state"], a["stale"]) for a in listed] == [(agent_id, "ready", False)]
    final = [x["state"] for x in await asyncio.to_thread(statuses, s) if x["agent_id"] == agent_id]
    assert final[-2:] == ["draining", "stopped"]


def test_a_silent_agent_is_marked_stale(settings: Settings) -> None:
    producer = EventProducer(settings)
    old = {**envelope(), "timestamp": now_ms() - 60_000, "agent_id": "gone-1", "role": "general",
           "roles": ["general"], "state": "busy", "in_flight": ["t"], "version": "0.1.0", "host": "h",
           "heartbeat_interval_ms": 5000, "started_at": None}
    producer.send(settings.kafka.topic_prefix + ".agents", "AgentStatus", old, key="gone-1")
    producer.flush()
    (listed,) = agent_statuses(settings)
    assert listed["agent_id"] == "gone-1" and listed["stale"] and listed["last_seen_s"] >= 60


def worker_env(settings: Settings, server: FakeOpenAI) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIOS_", "OPENAI_"))}
    env.update({"AIOS_TOPIC_PREFIX": settings.kafka.topic_prefix, "AIOS_DATA_DIR": str(settings.stores.data_dir / "w"),
                "AIOS_KAFKA_BOOTSTRAP": settings.kafka.bootstrap, "AIOS_REDIS_URL": settings.stores.redis_url,
                "AIOS_METRICS_PORT": "0", "AIOS_LLM": "openai:gpt-4o-mini", "AIOS_OPENAI_API_KEY": "sk-test",
                "AIOS_OPENAI_BASE_URL": server.base_url, "AIOS_LLM_MAX_RETRIES": "0",
                "AIOS_HEARTBEAT_INTERVAL_S": "0.5"})
    return env


def assign(settings: Settings, description: str) -> str:
    """Produce an Assignment straight to the role topic, as the orchestrator would."""
    task = build_task(description, project="drain")
    client = TaskClient(settings)
    try:
        client.producer.send(settings.kafka.topic_prefix + ".agent.general", "Assignment", {
            **envelope(), "task_id": task["task_id"], "project_id": "drain", "role": "general",
            "description": description, "attempt": 1, "context": {}, "submitted_at": task["timestamp"]},
            key=task["task_id"])
        client.producer.flush()
    finally:
        client.close()
    return str(task["task_id"])


async def stop(worker: subprocess.Popen[str]) -> None:
    worker.send_signal(signal.SIGTERM)
    _, err = await asyncio.to_thread(worker.communicate, timeout=60)
    assert worker.returncode == 0, err


async def test_sigterm_drains_the_in_flight_task_then_publishes_stopped(settings: Settings) -> None:
    with FakeOpenAI() as server:
        server.script(slow_first_token(3.0, "finished after the signal"), ok("done by the next worker"))
        worker = subprocess.Popen([*AIOS, "worker", "agents", "--role", "general"], env=worker_env(settings, server),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            await wait_for_state(settings, "ready", 60)
            first = assign(settings, "Summarise the design")
            busy = await wait_for_state(settings, "busy", 30)
            assert busy["in_flight"] == [first]
            worker.send_signal(signal.SIGTERM)
            await wait_for_state(settings, "draining", 10)
            second = assign(settings, "Arrives while draining")  # must be left for another worker
            _, err = await asyncio.to_thread(worker.communicate, timeout=60)
            assert worker.returncode == 0, err
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        assert len(server.requests) == 1
        states = [x["state"] for x in await asyncio.to_thread(statuses, settings)]
        assert states[-2:] == ["draining", "stopped"]
        assert [(r["task_id"], r["status"], r["output"]) for r in attempts(settings)] == [
            (first, "succeeded", "finished after the signal")]
        # The next worker of the group gets the assignment the drained one never acknowledged.
        successor = subprocess.Popen([*AIOS, "worker", "agents", "--role", "general"],
                                     env=worker_env(settings, server), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while second not in {r["task_id"] for r in attempts(settings)} and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
            await stop(successor)
        finally:
            if successor.poll() is None:
                successor.kill()
                successor.wait()
        assert len(server.requests) == 2, "the first task was committed, not done again"
    done = {(r["task_id"], r["output"]) for r in attempts(settings)}
    assert (second, "done by the next worker") in done


def attempts(settings: Settings) -> list[dict[str, Any]]:
    """The attempts' outcomes (not their pickups)."""
    reader = TopicReader(settings, settings.kafka.topic_prefix + ".attempts", from_beginning=True)
    try:
        return [d.value for _, d in reader.events(timeout_s=1)
                if not isinstance(d, Exception) and d.value["status"] != "started"]
    finally:
        reader.close()


async def wait_for_state(settings: Settings, state: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            seen = await asyncio.to_thread(statuses, settings, 0.3)
        except KafkaError:  # the new topic's partition leaders may still be settling
            seen = []
        found = [x for x in seen if x["state"] == state]
        if found:
            return found[-1]
        await asyncio.sleep(0.2)
    raise AssertionError(f"no agent reached {state!r} within {timeout_s}s")
