"""The runtime's router: deployments from settings, strategy per role, Prometheus counters."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from aios.agents.llm.servers.openai import FakeOpenAI, status
from aios.agents.runner import AgentTask, run_task
from aios.streams.engine.runtime import Runtime
from aios.streams.metrics import ROUTER_COOLDOWNS, ROUTER_DECISIONS
from aios.streams.settings import load_settings


def count(metric: object, *labels: str) -> float:
    return metric.labels(*labels)._value.get()  # type: ignore[attr-defined, no-any-return]


async def test_deployments_strategies_privacy_and_metrics() -> None:
    with FakeOpenAI() as remote, FakeOpenAI() as local:
        settings = load_settings(
            llm_deployments="openai:gpt-4o-mini,local:qwen2.5:7b", openai_api_key=SecretStr("sk-test"),
            openai_base_url=remote.base_url, local_llm_base_url=local.base_url, llm_max_retries=0,
            metrics_port=0)
        rt = Runtime(settings)
        try:
            assert [d.name for d in rt.router.deployments] == ["openai:gpt-4o-mini", "local:qwen2.5:7b"]
            before = count(ROUTER_DECISIONS, "latency", "local:qwen2.5:7b")
            # Restricted work stays local, whatever the strategy; backend's default strategy is latency.
            task = AgentTask("t1", "p", "backend", "Implement the cart", privacy="restricted")
            outcome = await run_task(rt.router, task)
            assert outcome.calls[0].deployment == "local:qwen2.5:7b" and outcome.calls[0].strategy == "latency"
            assert remote.requests == []
            # The fake answers free text, so backend's contract asks once more: two decisions.
            assert count(ROUTER_DECISIONS, "latency", "local:qwen2.5:7b") == before + len(outcome.calls) == before + 2
            # A task may override its role's strategy; a 429 cools the remote down and falls back.
            remote.script(status(429, retry_after=30))
            cooled = count(ROUTER_COOLDOWNS, "openai:gpt-4o-mini", "RateLimitError")
            # latency: the unmeasured remote goes first (general's own default, cost, would pick local).
            general = AgentTask("t2", "other-project", "general", "Say hello", strategy="latency")
            outcome = await run_task(rt.router, general)
            assert outcome.ok and outcome.calls[0].fallback_chain == ("openai:gpt-4o-mini", "local:qwen2.5:7b")
            assert count(ROUTER_COOLDOWNS, "openai:gpt-4o-mini", "RateLimitError") == cooled + 1
        finally:
            await rt.aclose()


def test_an_unknown_deployment_model_is_a_clear_error() -> None:
    settings = load_settings(llm_deployments="openai:gpt-9", openai_api_key=SecretStr("sk-test"), metrics_port=0)
    with pytest.raises(Exception, match="gpt-9.*not in the catalogue"):
        _ = Runtime(settings).router
