"""Costs come from the catalogue and real usage; an unknown model fails before any call."""

from __future__ import annotations

import pytest

from aios.agents.errors import UnknownModelError
from aios.agents.llm.base import LlmConfig
from aios.agents.llm.catalogue import cost_usd, load_catalogue
from aios.agents.llm.factory import make_provider
from aios.agents.llm.servers.openai import FakeOpenAI, ok
from aios.agents.runner import AgentTask, run_task


def test_an_unknown_model_is_an_error_at_startup_never_free() -> None:
    with pytest.raises(UnknownModelError, match="not in the catalogue"):
        make_provider(LlmConfig(spec="openai:gpt-9-imaginary", openai_api_key="sk-test"))


async def test_run_task_reports_the_catalogue_cost_of_real_usage() -> None:
    with FakeOpenAI() as server:
        server.script(ok("four words of output"))
        provider = make_provider(LlmConfig(spec="openai:gpt-4o-mini", openai_api_key="sk-test",
                                           openai_base_url=server.base_url))
        try:
            outcome = await run_task(provider, AgentTask("t1", "p", "general", "price this"))
        finally:
            await provider.aclose()
    assert outcome.ok and outcome.response is not None
    expected = cost_usd(load_catalogue().get("openai", "gpt-4o-mini"), outcome.response.usage)
    assert outcome.cost_usd == pytest.approx(expected)
    assert outcome.cost_usd > 0


async def test_offline_costs_nothing_and_says_so() -> None:
    provider = make_provider(LlmConfig(spec="offline:echo"))
    outcome = await run_task(provider, AgentTask("t1", "p", "general", "free"))
    assert outcome.cost_usd == 0.0
    assert outcome.response is not None and outcome.response.offline
