"""ask_agent through the real pipeline: the asker's question is a task of its project for another
role, run by the orchestrator; its terminal result comes back to the asker as the tool's answer.
The OpenAI wire-format server scripts each model; questions nest only AIOS_ASK_MAX_DEPTH deep."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from pydantic import SecretStr

from aios.agents.llm.servers.openai import FakeOpenAI, ok, tool_call
from aios.agents.tools_ask import ask_depth, asked_task_id
from aios.schemas.events import envelope, now_ms
from aios.schemas.sealed import SEALED_PREFIX, new_key
from aios.streams.kafka import EventProducer, TopicReader
from aios.streams.orchestration.plan import Plan, PlannedTask
from aios.streams.pipeline import running
from aios.streams.readmodels.task_client import TaskClient, build_task
from aios.streams.settings import Settings
from aios.streams.topics import Topics, create_topics
from tests.integration.helpers import submit_and_wait
from tests.integration.test_llm_journal import read

pytestmark = pytest.mark.integration

WRITER_ANSWER = json.dumps({"summary": "a haiku", "document": "old pond / a frog jumps in / splash"},
                           separators=(",", ":"))  # as the contract check writes it back


def ask_settings(settings: Settings, server: FakeOpenAI, **more: Any) -> Settings:
    s = settings.replace(llm="openai:gpt-4o-mini", openai_api_key=SecretStr("sk-test"),
                         openai_base_url=server.base_url, llm_max_retries=0, roles=("general", "writer"), **more)
    create_topics(s)  # the writer's topic too
    return s


def tool_results(body: dict[str, Any]) -> list[str]:
    """What the tools answered, as the model read it in this request."""
    return [str(m["content"]) for m in body["messages"] if m["role"] == "tool"]


def persona_of(body: dict[str, Any]) -> str:
    return str(body["messages"][0]["content"])


async def test_an_agent_asks_another_role_and_works_on_with_its_answer(settings: Settings) -> None:
    with FakeOpenAI() as server:
        server.script(tool_call("ask_agent", role="writer", question="Write a haiku about a pond."),
                      ok(WRITER_ANSWER), ok("Here is the haiku the writer gave me."))
        s = ask_settings(settings, server)
        async with running(s, ["orchestrator", "results", "agents"]):
            result = await submit_and_wait(s, "Get me a haiku", timeout_s=60, role="general")
            messages = await asyncio.to_thread(read, s, s.kafka.topic_prefix + ".messages", 3)
            finals = await asyncio.to_thread(read, s, s.kafka.topic_prefix + ".results", 2)
        requests = [r.body for r in server.requests]
    assert result["status"] == "succeeded" and result["output"] == "Here is the haiku the writer gave me."
    assert len(requests) == 3
    assert "Write a haiku about a pond." in requests[1]["messages"][1]["content"]  # the writer's task
    assert tool_results(requests[2]) == [WRITER_ANSWER]  # the answer came back to the asker
    (asked,) = [r for r in finals if ask_depth(r["task_id"]) == 1]
    assert asked["project_id"] == result["project_id"] and asked["role"] == "writer"
    assert asked["status"] == "succeeded" and asked["cost_usd"] > 0  # its own attempt and cost
    kinds = {m["kind"]: m for m in messages}
    assert kinds["ask"]["recipient"] == "writer" and kinds["ask"]["correlation_id"] == asked["task_id"]
    assert kinds["reply"]["recipient"] == result["task_id"] and kinds["reply"]["correlation_id"] == asked["task_id"]
    assert json.loads(kinds["reply"]["content"])["answer"] == WRITER_ANSWER


async def test_a_loop_of_questions_stops_at_the_depth_limit(settings: Settings) -> None:
    """general asks writer, which asks general, which asks writer again: past AIOS_ASK_MAX_DEPTH=2,
    the third question is answered with an error the model reads, and the chain unwinds."""
    with FakeOpenAI() as server:
        server.script(
            tool_call("ask_agent", role="writer", question="q1: what should the poem say?"),     # the task, depth 0
            tool_call("ask_agent", role="general", question="q2: ask around for a theme"),       # writer, depth 1
            tool_call("ask_agent", role="writer", question="q3: and what does the writer think?"),  # general, depth 2
            ok("a pond, I could not ask further"),  # depth 2 answers after the refusal
            ok(WRITER_ANSWER),                      # depth 1
            ok("done: the poem is about a pond"),   # the task
        )
        s = ask_settings(settings, server, ask_max_depth=2)
        async with running(s, ["orchestrator", "results", "agents"]):
            result = await submit_and_wait(s, "Write a poem, asking others", timeout_s=90, role="general")
            finals = await asyncio.to_thread(read, s, s.kafka.topic_prefix + ".results", 3)
        requests = [r.body for r in server.requests]
    assert result["status"] == "succeeded" and result["output"] == "done: the poem is about a pond"
    assert len(requests) == 6  # no question past the limit was asked: no seventh call
    refusal = tool_results(requests[3])
    assert len(refusal) == 1 and refusal[0].startswith("error: ask_agent refused")
    assert "AIOS_ASK_MAX_DEPTH" in refusal[0]
    assert tool_results(requests[4]) == ["a pond, I could not ask further"]
    assert tool_results(requests[5]) == [WRITER_ANSWER]
    depths = sorted(ask_depth(r["task_id"]) for r in finals)
    assert depths == [0, 1, 2] and all(r["status"] == "succeeded" for r in finals)


async def test_a_question_to_a_role_nobody_runs_is_an_error_the_model_reads(settings: Settings) -> None:
    with FakeOpenAI() as server:
        server.script(tool_call("ask_agent", role="qa", question="Is this tested?"), ok("nobody answered"))
        s = ask_settings(settings, server)
        async with running(s, ["orchestrator", "results", "agents"]):
            result = await submit_and_wait(s, "Ask qa", timeout_s=60, role="general")
        requests = [r.body for r in server.requests]
    assert result["status"] == "succeeded"
    (answer,) = tool_results(requests[1])
    # qa is a known role that this deployment does not run: the orchestrator fails the question.
    assert answer.startswith("error: the qa agent did not answer (failed)") and "unknown role 'qa'" in answer


def raw_values(settings: Settings, topic: str, want: int) -> list[bytes]:
    reader = TopicReader(settings, topic, from_beginning=True)
    found: list[bytes] = []
    try:
        for msg, _ in reader.events(timeout_s=5):
            found.append(bytes(msg.value() or b""))
            if len(found) >= want:
                break
    finally:
        reader.close()
    return found


async def test_a_restricted_asker_seals_its_question_and_the_answer(settings: Settings) -> None:
    secret = "Whitfield payroll ledger 7731"
    answer = json.dumps({"summary": "ledger", "document": f"about {secret}"}, separators=(",", ":"))
    with FakeOpenAI() as server:
        server.script(tool_call("ask_agent", role="writer", question=f"Summarise the {secret}."),
                      ok(answer), ok("summarised"))
        s = settings.replace(llm="local:llama3.2:1b", local_llm_base_url=server.base_url, llm_max_retries=0,
                             roles=("general", "writer"), encryption_key=f"k1:{new_key()}")
        create_topics(s)
        async with running(s, ["orchestrator", "results", "agents"]):
            result = await submit_and_wait(s, "Summarise the ledger", timeout_s=60, role="general",
                                           privacy="restricted")
            tasks = await asyncio.to_thread(raw_values, s, s.kafka.topic_prefix + ".tasks", 2)
            messages = await asyncio.to_thread(read, s, s.kafka.topic_prefix + ".messages", 3)
        requests = [r.body for r in server.requests]
    assert result["status"] == "succeeded" and result["output"] == "summarised"
    assert f"Summarise the {secret}." in requests[1]["messages"][1]["content"]  # the writer could open it
    assert tool_results(requests[2]) == [answer]  # and its sealed result was opened for the asker
    assert len(tasks) == 2 and not any(secret.encode() in raw for raw in tasks)
    asked = [m for m in messages if m["kind"] in ("ask", "reply")]
    assert len(asked) == 2 and all(m["content"].startswith(SEALED_PREFIX) for m in asked)


async def test_a_question_into_a_spent_or_cancelled_project_is_answered_with_the_reason(settings: Settings) -> None:
    """The orchestrator's side of the budget stop: a question that arrives when its project may start
    nothing more fails at once with the reason (which the asking model reads as the answer)."""
    topics = Topics.from_settings(settings)
    async with running(settings, ["orchestrator", "results"]):
        client = TaskClient(settings)
        client.watch_results()
        client.submit_plan(Plan(project="spent", budget_usd=0.01, tasks=(
            PlannedTask(id="t1", role="general", description="costly"),)))
        client.submit(build_task("standalone", project="stopped", task_id="s1"))
        await asyncio.to_thread(read, settings, topics.role("general"), 2)  # both dispatched
        producer = EventProducer(settings)
        producer.send(topics.attempts, "TaskResult", {
            **envelope(), "task_id": "t1", "project_id": "spent", "role": "general", "attempt": 1,
            "status": "succeeded", "output": "done", "error": None, "error_type": None, "agent_id": "a",
            "provider": "openai", "model": "gpt-4o-mini", "input_tokens": 1, "output_tokens": 1, "cost_usd": 0.5,
            "latency_ms": 1.0, "submitted_at": now_ms(), "recall": []}, key="spent")
        producer.flush()
        client.control("stopped", "cancel", None, "stop it")
        await asyncio.to_thread(client.wait, ["t1", "s1"], 60)
        asks = {p: asked_task_id(p, "t0", 1, 0, 1) for p in ("spent", "stopped")}
        for project, tid in asks.items():
            client.submit(build_task("a question", project=project, task_id=tid))
        found = await asyncio.to_thread(client.wait, list(asks.values()), 60)
        client.close()
    spent, stopped = (found[asks[p]].result for p in ("spent", "stopped"))
    assert spent["status"] == "failed" and "not asked: the project's budget $0.0100 is spent" in spent["error"]
    assert stopped["status"] == "failed" and stopped["error"] == "not asked: the project is cancelled"
