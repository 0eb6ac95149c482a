"""A role calls a remote A2A agent as a tool (issue 19 §2): the a2a-sdk client against a real a2a-sdk
server started here, over JSON-RPC on HTTP. The answer is journaled by (task, attempt, step, index):
a replay, or a worker killed after the call and its assignment redelivered, never calls it again."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
import uuid
from collections.abc import Mapping
from typing import Any

import pytest
import redis

from aios.agents.llm.base import ToolCall
from aios.agents.llm.servers.openai import FakeOpenAI, ok, slow_first_token, tool_call
from aios.agents.runner import tool_journal_key
from aios.agents.tools import CallSite, Toolbox, ToolContext
from aios.agents.tools_a2a import AskRemoteAgent, RemoteAgent
from aios.connectors.context.journal import journal_key
from aios.schemas.events import envelope
from aios.streams.kafka import EventProducer
from aios.streams.processors.agent_tools import RoleTools
from aios.streams.settings import Settings
from tests.integration.a2a_remote import RemoteAgentServer
from tests.integration.test_agent_lifecycle import AIOS, worker_env
from tests.integration.test_llm_journal import read

pytestmark = pytest.mark.integration


class DictJournal:
    def __init__(self) -> None:
        self.records: dict[tuple[str, int, int], Mapping[str, Any]] = {}

    async def get(self, task_id: str, attempt: int, step: int) -> Mapping[str, Any] | None:
        return self.records.get((task_id, attempt, step))

    async def put(self, task_id: str, attempt: int, step: int, record: Mapping[str, Any]) -> None:
        self.records.setdefault((task_id, attempt, step), record)


def ask(message: str = "hello") -> ToolCall:
    return ToolCall("call_0", "ask_translator", {"message": message})


async def once(agent: RemoteAgent, call: ToolCall | None = None) -> str:
    """One call through a toolbox with a fresh tool, closed after."""
    tool = AskRemoteAgent(agent)
    try:
        return await Toolbox([tool]).run(call or ask(), ToolContext())
    finally:
        await tool.aclose()


async def test_the_tool_asks_an_a2a_sdk_server_once_and_a_replay_reads_the_journal() -> None:
    journal = DictJournal()
    site = CallSite("p1/t1", 1, 0, 0)
    with RemoteAgentServer() as remote:
        tool = AskRemoteAgent(RemoteAgent("translator", remote.url, timeout_s=30))
        box = Toolbox([tool])
        ctx = ToolContext(journal=journal, site=site)
        assert await box.run(ask(), ctx) == "remote: hello"
        assert await box.run(ask(), ctx) == "remote: hello", "the replay reads the journal"
        # Another call of the same step is another site: it is asked.
        assert await box.run(ask("bye"), ToolContext(journal=journal, site=CallSite("p1/t1", 1, 0, 1))) == "remote: bye"
        await tool.aclose()
    assert remote.calls == 2
    assert remote.message_ids == ["p1/t1:1:0:0", "p1/t1:1:0:1"], "the message id is the call's id, for dedupe"
    assert journal.records[("p1/t1/tool/0", 1, 0)]["text"] == "remote: hello"


async def test_failures_timeouts_and_refusals_are_answers_the_model_reads() -> None:
    with RemoteAgentServer("fail") as remote:
        answer = await once(RemoteAgent("translator", remote.url))
    assert answer == "error: the remote agent 'translator' ended its task failed: the remote could not do it"
    with RemoteAgentServer("slow", delay_s=5) as remote:
        answer = await once(RemoteAgent("translator", remote.url, timeout_s=1))
    assert answer == "error: the remote agent 'translator' did not answer within 1s"
    with RemoteAgentServer(token="s3cret") as remote:
        refused = await once(RemoteAgent("translator", remote.url))
        allowed = await once(RemoteAgent("translator", remote.url, token="s3cret"))
    assert refused.startswith("error: the remote agent 'translator' could not be asked") and "401" in refused
    assert allowed == "remote: hello"
    gone = RemoteAgentServer()  # never started: nothing listens on its port
    answer = await once(RemoteAgent("translator", gone.url, timeout_s=5))
    assert answer.startswith("error: the remote agent 'translator' could not be asked")
    bad = await once(RemoteAgent("translator", gone.url), ToolCall("c", "ask_translator", {"message": ""}))
    assert bad.startswith("error: bad arguments for ask_translator")


def test_restricted_tasks_are_never_offered_a_remote_agent(settings: Settings) -> None:
    s = settings.replace(roles=("general", "qa"), a2a_agents={"translator": {"url": "http://127.0.0.1:9",
                                                                             "roles": ["general"]}})
    tools = RoleTools(s)
    general = tools.for_task("general", "normal")
    assert general is not None and "ask_translator" in {t.name for t in general.specs()}
    assert {t.name for t in tools.for_task("qa", "normal").specs()} == {"read_dependency_output", "search_memory"}  # type: ignore[union-attr]
    restricted = tools.for_task("general", "restricted")
    assert restricted is not None and "ask_translator" not in {t.name for t in restricted.specs()}


def assignment(task_id: str) -> dict[str, Any]:
    return {**envelope(), "task_id": task_id, "project_id": "remote", "role": "general",
            "description": "Translate the greeting", "attempt": 1, "priority": 0, "privacy": "normal",
            "strategy": None, "context": {}, "submitted_at": int(time.time() * 1000)}


async def _wait(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def test_a_worker_killed_after_the_call_is_redelivered_and_never_calls_the_remote_again(
        settings: Settings) -> None:
    event = assignment(f"t-{uuid.uuid4().hex[:8]}")
    task = f"remote/{event['task_id']}"
    r = redis.Redis.from_url(settings.stores.redis_url)
    with RemoteAgentServer() as remote, FakeOpenAI() as llm:
        # Step 0 asks the remote agent; step 1 hangs (the worker is killed in it); the successor
        # replays step 0 and the tool from the journal and is answered step 1 by the third script.
        llm.script(tool_call("ask_translator", message="bonjour"), slow_first_token(60, "never seen"),
                   ok("The greeting is hello."))
        env = {**worker_env(settings, llm),
               "AIOS_A2A_AGENTS": json.dumps({"translator": {"url": remote.url, "timeout_s": 30}})}
        producer = EventProducer(settings)
        producer.send(settings.kafka.topic_prefix + ".agent.general", "Assignment", event, key=event["task_id"])
        producer.flush()
        first = subprocess.Popen([*AIOS, "worker", "agents", "--role", "general"], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            await _wait(lambda: len(llm.requests) >= 2, 90, "the worker to call the remote and reach step 1")
            tool_key = tool_journal_key(event["project_id"], event["task_id"], 0)
            assert r.get(journal_key(settings.kafka.topic_prefix, tool_key, 1, 0)) is not None
            first.send_signal(signal.SIGKILL)  # mid step 1: nothing after the tool call was committed
            first.wait(timeout=30)
        finally:
            if first.poll() is None:
                first.kill()
        second = subprocess.Popen([*AIOS, "worker", "agents", "--role", "general"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            done = await asyncio.to_thread(
                lambda: [a for a in read(settings, settings.kafka.topic_prefix + ".attempts", 3, 120)
                         if a["status"] != "started"])
            messages = await asyncio.to_thread(read, settings, settings.kafka.topic_prefix + ".messages", 1)
        finally:
            second.send_signal(signal.SIGTERM)
            try:
                second.wait(timeout=60)
            except subprocess.TimeoutExpired:
                second.kill()
        assert remote.calls == 1, "the redelivered assignment read the remote's answer from the journal"
        assert remote.message_ids == [f"{task}:1:0:0"]
        assert len(llm.requests) == 3, "step 0 replayed from the journal; step 1 asked again (it was never answered)"
    assert [(a["status"], a["output"]) for a in done] == [("succeeded", "The greeting is hello.")]
    (message,) = messages
    assert message["kind"] == "tool_call"
    assert json.loads(message["content"])["result"] == "remote: bonjour"
