"""The agent's pure task logic: prompt building and turning provider failures into outcomes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest

from aios.agents.errors import ContextTooLongError, RateLimitError
from aios.agents.llm.anthropic_provider import AnthropicProvider
from aios.agents.llm.base import ChatRequest, ChatResponse
from aios.agents.llm.offline import OFFLINE_LABEL, OfflineProvider
from aios.agents.llm.openai_provider import OpenAIProvider
from aios.agents.llm.router import Router, RouterConfig
from aios.agents.llm.servers import anthropic as anthropic_server
from aios.agents.llm.servers.anthropic import FakeAnthropic
from aios.agents.llm.servers.openai import FakeOpenAI, context_too_long, ok, status
from aios.agents.runner import TOTAL_BUDGET, AgentTask, build_request, run_task

TASK = AgentTask(
    task_id="t-2",
    project_id="p-1",
    role="general",
    description="Implement the orders endpoint",
    attempt=2,
    context={"t-1": "Schema: orders(id, total)"},
    history=("user: we use postgres", "planner: split into two tasks"),
)


def test_request_names_role_and_carries_task_dependencies_and_history() -> None:
    request = build_request(TASK)
    system, user = request.messages
    assert system.role == "system" and "general agent" in system.content
    assert user.role == "user"
    assert user.content.startswith("Task: Implement the orders endpoint")
    assert "[t-1]\nSchema: orders(id, total)" in user.content
    assert user.content.index("we use postgres") < user.content.index("split into two tasks")
    assert request.metadata == {"task_id": "t-2", "project_id": "p-1", "role": "general", "attempt": "2"}


def test_request_is_trimmed_to_budget_keeping_newest_history() -> None:
    task = AgentTask(
        task_id="t",
        project_id="p",
        role="qa",
        description="x" * 50_000,
        context={f"dep-{i}": "y" * 10_000 for i in range(10)},
        history=tuple(f"turn-{i} " + "z" * 500 for i in range(100)),
    )
    user = build_request(task).messages[1].content
    assert len(user) <= TOTAL_BUDGET
    assert "characters trimmed" in user


def test_history_keeps_newest_turns_first() -> None:
    task = AgentTask("t", "p", "qa", "check", history=tuple(f"turn-{i} " + "z" * 500 for i in range(100)))
    user = build_request(task).messages[1].content
    assert "turn-99" in user
    assert "turn-0 " not in user


async def test_run_task_with_offline_provider() -> None:
    outcome = await run_task(OfflineProvider(), TASK)
    assert outcome.ok and outcome.error is None
    assert outcome.output.startswith(OFFLINE_LABEL)
    assert outcome.response is not None and outcome.response.offline


class _Failing:
    name, model, offline = "openai", "gpt-4o-mini", False  # a catalogue entry: the router prices it

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    async def complete(self, request: ChatRequest, *, on_delta: object = None) -> ChatResponse:
        raise self.exc

    async def aclose(self) -> None:
        pass


async def test_llm_errors_become_failed_outcomes() -> None:
    outcome = await run_task(_Failing(RateLimitError("slow down", provider="openai", retry_after=3)), TASK)
    assert not outcome.ok
    assert outcome.output == ""
    assert outcome.error == "slow down"
    assert outcome.error_type == "RateLimitError"
    assert outcome.response is None


async def test_other_exceptions_propagate() -> None:
    with pytest.raises(KeyError):
        await run_task(_Failing(KeyError("bug")), TASK)


async def test_run_task_against_the_fake_openai_server(
    fake_openai: FakeOpenAI, make_openai: Callable[..., OpenAIProvider]
) -> None:
    provider = make_openai()
    fake_openai.script(ok("done: orders endpoint"), context_too_long(), status(401))
    good = await run_task(provider, TASK)
    too_long = await run_task(provider, TASK)
    denied = await run_task(provider, TASK)
    assert good.ok and good.output == "done: orders endpoint"
    assert good.response is not None and good.response.usage.output_tokens == 3
    assert (too_long.ok, too_long.error_type) == (False, ContextTooLongError.__name__)
    assert (denied.ok, denied.error_type) == (False, "ProviderAuthError")


async def test_run_task_against_the_fake_anthropic_server(
    fake_anthropic: FakeAnthropic, make_anthropic: Callable[..., AnthropicProvider]
) -> None:
    provider = make_anthropic()
    fake_anthropic.script(
        anthropic_server.ok("done: orders endpoint"),
        anthropic_server.context_too_long(),
        anthropic_server.overloaded(),
    )
    good = await run_task(provider, TASK)
    too_long = await run_task(provider, TASK)
    # No retries here: the router's retry of an overload is tested with the router.
    overloaded = await run_task(Router.single(provider, config=RouterConfig(max_retries=0)), TASK)
    assert good.ok and good.output == "done: orders endpoint"
    assert good.response is not None and good.response.provider == "anthropic"
    assert good.response.usage.output_tokens == 3
    # The system prompt travels as Anthropic's `system` parameter, the task as the user turn.
    sent = fake_anthropic.requests[0].body
    assert "general agent" in sent["system"]
    assert [m["role"] for m in sent["messages"]] == ["user"]
    assert (too_long.ok, too_long.error_type) == (False, ContextTooLongError.__name__)
    assert (overloaded.ok, overloaded.error_type) == (False, "OverloadedError")


def test_the_acceptance_criterion_is_in_the_prompt_under_the_task() -> None:
    with_it = build_request(AgentTask("t", "p", "general", "Design the API", acceptance="names every endpoint"))
    user = with_it.messages[-1].content
    assert user.index("Task: Design the API") < user.index(
        "Acceptance criterion (the work is judged done against it): names every endpoint")
    assert "Acceptance" not in build_request(AgentTask("t", "p", "general", "Design the API")).messages[-1].content


def test_offline_answers_a_replan_step_with_the_planner_contracts_second_example() -> None:
    provider = OfflineProvider()
    goal = asyncio.run(provider.complete(build_request(AgentTask("plan", "p", "planner", "Build a shop"))))
    replan = asyncio.run(provider.complete(build_request(AgentTask("m1:replan", "p", "planner", "Re-plan"))))
    assert [m["id"] for m in json.loads(goal.text)["milestones"]] == ["m1", "m2"]
    assert [t["id"] for t in json.loads(replan.text)["tasks"]] == ["validate", "build"]
