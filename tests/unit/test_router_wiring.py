"""The runtime's router: deployments from settings, strategy per role, Prometheus counters."""

from __future__ import annotations

import json

import pytest
from pydantic import SecretStr

from aios.agents.llm.servers.openai import FakeOpenAI, status
from aios.agents.runner import AgentTask, CallRecord, run_task
from aios.schemas.events import envelope
from aios.streams.engine.runtime import Runtime
from aios.streams.metrics import ROUTER_COOLDOWNS, ROUTER_DECISIONS
from aios.streams.processors.agent_events import llm_call_event
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


async def test_with_only_remote_models_pii_is_redacted_by_default_and_the_llm_call_says_so() -> None:
    with FakeOpenAI() as remote:
        settings = load_settings(llm_deployments="openai:gpt-4o-mini", openai_api_key=SecretStr("sk-test"),
                                 openai_base_url=remote.base_url, llm_max_retries=0, metrics_port=0)
        assert settings.llm.pii_mode == "redact"
        rt = Runtime(settings)
        try:
            task = AgentTask("t3", "p", "general", "Ring Ana on +44 20 7946 0958 about build 12345678901")
            outcome = await run_task(rt.router, task)
            sent = json.dumps(remote.requests[0].body)
            assert outcome.ok and outcome.calls[0].redacted
            assert "7946" not in sent and "<PHONE_1>" in sent and "build 12345678901" in sent
            a = {**envelope(), "task_id": "t3", "project_id": "p", "attempt": 1}
            assert llm_call_event(a, outcome.calls[0], outcome, "agent-1")["redacted"] is True
            assert CallRecord.from_record(outcome.calls[0].to_record()).redacted  # and so says a replay
            plain = await run_task(rt.router, AgentTask("t4", "p", "general", "port 9092 and 6379, pid 123456789"))
            assert plain.ok and not plain.calls[0].redacted
            assert llm_call_event(a, plain.calls[0], plain, "agent-1")["redacted"] is False
        finally:
            await rt.aclose()


async def test_local_only_fails_a_pii_prompt_without_a_local_model_and_restricted_never_leaves() -> None:
    with FakeOpenAI() as remote:
        for pii in ("local-only", "redact"):
            settings = load_settings(llm_deployments="openai:gpt-4o-mini", openai_api_key=SecretStr("sk-test"),
                                     openai_base_url=remote.base_url, llm_max_retries=0, metrics_port=0, llm_pii=pii)
            rt = Runtime(settings)
            try:
                restricted = await run_task(rt.router, AgentTask("t5", "p", "general", "Say hi", privacy="restricted"))
                assert not restricted.ok and restricted.error_type == "NoDeploymentError"
                pii_task = AgentTask("t6", "p", "general", "Mail jane.doe@corp.example")
                outcome = await run_task(rt.router, pii_task)
                assert outcome.ok is (pii == "redact")
            finally:
                await rt.aclose()
        assert len(remote.requests) == 1  # only the redacted call went out


@pytest.mark.parametrize(("env", "policy"), [
    ({}, "redact"),
    ({"AIOS_LLM_PII": "local-only"}, "local-only"),
    ({"AIOS_LLM_REDACT_PII": "0"}, "local-only"),  # set before AIOS_LLM_PII existed: still keeps PII local
    ({"AIOS_LLM_REDACT_PII": "1"}, "redact"),
    ({"AIOS_LLM_REDACT_PII": "0", "AIOS_LLM_PII": "redact"}, "redact"),
])
def test_the_pii_policy_setting(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], policy: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert load_settings().llm.pii_mode == policy
