"""The agent worker with the real OpenAI SDK, against a local Chat Completions server."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from aios.agents.llm.servers.openai import FakeOpenAI, ok, status
from aios.streams.pipeline import running
from aios.streams.settings import Settings
from tests.integration.helpers import submit_and_wait

pytestmark = pytest.mark.integration


def openai_settings(settings: Settings, server: FakeOpenAI) -> Settings:
    return settings.replace(
        llm="openai:gpt-4o-mini", openai_api_key=SecretStr("sk-test"),
        openai_base_url=server.base_url, llm_max_retries=0,
    )


async def run_one(settings: Settings, description: str) -> dict[str, object]:
    async with running(settings, ["orchestrator", "results", "agents"]):
        return await submit_and_wait(settings, description)


async def test_a_configured_provider_is_used_not_offline(settings: Settings) -> None:
    with FakeOpenAI() as server:
        server.script(ok("The rate limiter uses a token bucket per key."))
        result = await run_one(openai_settings(settings, server), "Design a rate limiter")
        assert len(server.requests) == 1
        body = server.requests[0].body
    assert result["status"] == "succeeded"
    assert result["provider"] == "openai"
    assert result["model"] == "gpt-4o-mini"
    assert result["output"] == "The rate limiter uses a token bucket per key."
    assert "offline" not in str(result["output"])
    assert body["model"] == "gpt-4o-mini"
    assert body["stream"] is True
    assert any("Design a rate limiter" in m["content"] for m in body["messages"])
    assert int(str(result["input_tokens"])) > 0
    assert float(str(result["cost_usd"])) > 0  # priced from agents/llm/models.json


async def test_provider_error_is_a_failed_result_not_a_crash(settings: Settings) -> None:
    with FakeOpenAI() as server:
        server.script(status(401, message="bad key"))
        result = await run_one(openai_settings(settings, server), "anything")
    assert result["status"] == "failed"
    assert "ProviderAuthError" in str(result["error"]) or "401" in str(result["error"])
