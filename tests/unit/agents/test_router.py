"""The router with real SDK clients against local fake servers: strategies, privacy, reliability."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator, Callable

import pytest

from aios.agents.errors import BadRequestError, BudgetExceededError, CoolingDownError, NoDeploymentError
from aios.agents.llm.base import ChatMessage, ChatRequest, LlmConfig
from aios.agents.llm.catalogue import ModelInfo, Tier
from aios.agents.llm.openai_provider import OpenAIProvider
from aios.agents.llm.router import Budget, Deployment, Route, Router, RouterConfig, Strategy
from aios.agents.llm.servers.openai import FakeOpenAI, ok, slow_first_token, status


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def info(name: str, *, price: float = 1.0, tier: Tier = "small", local: bool = False,
         window: int = 128_000) -> ModelInfo:
    return ModelInfo(provider="local" if local else "openai", model=name, context_window=window,
                     input_per_mtok=price, cached_input_per_mtok=price / 2, output_per_mtok=price * 4,
                     tier=tier, local=local)


@pytest.fixture
async def make() -> AsyncIterator[Callable[..., tuple[Deployment, FakeOpenAI]]]:
    servers: list[FakeOpenAI] = []
    providers: list[OpenAIProvider] = []

    def build(name: str, **kw: object) -> tuple[Deployment, FakeOpenAI]:
        server = FakeOpenAI().start()
        servers.append(server)
        weight = float(kw.pop("weight", 1.0))  # type: ignore[arg-type]
        model_info = info(name, **kw)  # type: ignore[arg-type]
        provider = OpenAIProvider(name, config=LlmConfig(openai_api_key="sk-test", openai_base_url=server.base_url,
                                                         timeout_s=5), name=model_info.provider)
        providers.append(provider)
        return Deployment(name, provider, model_info, weight=weight), server

    yield build
    for p in providers:
        await p.aclose()
    for s in servers:
        s.stop()


def ask(text: str = "hello", max_tokens: int = 100) -> ChatRequest:
    return ChatRequest(messages=(ChatMessage("user", text),), max_tokens=max_tokens)


async def test_cost_picks_the_cheapest_that_meets_the_tier(make: Callable[..., tuple[Deployment, FakeOpenAI]]) -> None:
    cheap, cheap_srv = make("cheap", price=0.1, tier="small")
    mid, mid_srv = make("mid", price=1.0, tier="medium")
    big, big_srv = make("big", price=10.0, tier="large")
    router = Router([big, mid, cheap])
    assert (await router.complete(Route(ask(), tier="small"))).deployment == "cheap"
    assert (await router.complete(Route(ask(), tier="medium"))).deployment == "mid"
    assert (await router.complete(Route(ask(), tier="large"))).deployment == "big"
    assert (len(cheap_srv.requests), len(mid_srv.requests), len(big_srv.requests)) == (1, 1, 1)


async def test_latency_uses_an_ewma_of_time_to_first_token(
        make: Callable[..., tuple[Deployment, FakeOpenAI]]) -> None:
    slow, slow_srv = make("slow")
    fast, _ = make("fast")
    router = Router([slow, fast])
    slow_srv.script(slow_first_token(0.25), slow_first_token(0.25))
    first = await router.complete(Route(ask(), strategy=Strategy.LATENCY))
    second = await router.complete(Route(ask(), strategy=Strategy.LATENCY))
    assert {first.deployment, second.deployment} == {"slow", "fast"}  # unmeasured ones are tried first
    assert slow.ttft_ewma_ms is not None and slow.ttft_ewma_ms >= 200
    assert fast.ttft_ewma_ms is not None and fast.ttft_ewma_ms < slow.ttft_ewma_ms
    for _ in range(3):
        assert (await router.complete(Route(ask(), strategy=Strategy.LATENCY))).deployment == "fast"


async def test_least_busy_and_weighted(make: Callable[..., tuple[Deployment, FakeOpenAI]]) -> None:
    a, _ = make("a", weight=3)
    b, _ = make("b", weight=1)
    router = Router([a, b], rng=random.Random(7))
    a.gate.in_flight = 2
    assert router.candidates(Route(ask(), strategy=Strategy.LEAST_BUSY))[0][0].name == "b"
    a.gate.in_flight = 0
    picks = Counter(router.candidates(Route(ask(), strategy=Strategy.WEIGHTED))[0][0].name for _ in range(4000))
    assert 0.70 < picks["a"] / 4000 < 0.80  # weight 3:1


async def test_429_cools_down_honours_retry_after_and_falls_back(
        make: Callable[..., tuple[Deployment, FakeOpenAI]]) -> None:
    primary, primary_srv = make("primary", price=0.1)
    backup, backup_srv = make("backup", price=1.0)
    clock = Clock()
    router = Router([primary, backup], config=RouterConfig(base_cooldown_s=1.0), clock=clock)
    primary_srv.script(status(429, retry_after=30))
    routed = await router.complete(Route(ask()))
    assert routed.deployment == "backup"
    assert routed.fallback_chain == ("primary", "backup")
    assert primary.cooldown_until == pytest.approx(clock.now + 30)
    # While cooling, the primary is not called at all.
    assert (await router.complete(Route(ask()))).fallback_chain == ("backup",)
    assert len(primary_srv.requests) == 1
    clock.now += 31
    assert (await router.complete(Route(ask()))).deployment == "primary"


async def test_5xx_cools_down_and_all_cooling_is_a_clear_error(
        make: Callable[..., tuple[Deployment, FakeOpenAI]]) -> None:
    first, first_srv = make("first")
    second, second_srv = make("second")
    clock = Clock()
    # No queue time: a call that finds every deployment cooling fails at once, saying when to retry.
    router = Router([first, second], config=RouterConfig(base_cooldown_s=5.0, max_retries=0, max_queue_s=0),
                    clock=clock)
    first_srv.script(status(500))
    second_srv.script(status(503))
    with pytest.raises(Exception, match="503|nternal|unavailable"):
        await router.complete(Route(ask()))
    with pytest.raises(CoolingDownError, match="cooling down.*ready again in 5.0s") as cooling:
        await router.complete(Route(ask()))
    assert cooling.value.retry_after == pytest.approx(5.0)  # retryable: the orchestrator backs off


async def test_a_single_deployment_is_not_cooled_down(make: Callable[..., tuple[Deployment, FakeOpenAI]]) -> None:
    only, srv = make("only")
    router = Router([only], config=RouterConfig(base_cooldown_s=5.0, max_retries=0), clock=Clock())
    srv.script(status(500))
    with pytest.raises(Exception, match="500|nternal|unavailable"):
        await router.complete(Route(ask()))
    assert (await router.complete(Route(ask()))).deployment == "only", "nothing to fall back to: call again"


async def test_restricted_data_never_reaches_a_remote_server(
        make: Callable[..., tuple[Deployment, FakeOpenAI]]) -> None:
    remote, remote_srv = make("remote", price=0.0)  # as cheap as the local one: privacy, not cost, decides
    local, local_srv = make("local-llama", local=True, price=0.0)
    for config in (RouterConfig(), RouterConfig(redact_remote=False)):
        router = Router([remote, local], config=config)
        routed = await router.complete(Route(ask("internal salary table"), privacy="restricted"))
        assert routed.deployment == "local-llama" and not routed.redacted
    routed = await Router([remote, local], config=RouterConfig(redact_remote=False)).complete(
        Route(ask("mail me at jane.doe@corp.example")))  # PII detected, and local-only
    assert routed.deployment == "local-llama"
    assert remote_srv.requests == [] and len(local_srv.requests) == 3
    for config in (RouterConfig(), RouterConfig(redact_remote=False)):
        with pytest.raises(NoDeploymentError, match="the task is restricted, and no local deployment"):
            await Router([remote], config=config).complete(Route(ask("x"), privacy="restricted"))
    with pytest.raises(NoDeploymentError, match="contains PII and redaction is off.*AIOS_LLM_PII=redact"):
        await Router([remote], config=RouterConfig(redact_remote=False)).complete(Route(ask("call +44 20 7946 0958")))
    assert remote_srv.requests == []


async def test_by_default_pii_reaches_remote_only_masked_and_engineering_numbers_pass_as_they_are(
        make: Callable[..., tuple[Deployment, FakeOpenAI]]) -> None:
    remote, remote_srv = make("remote")
    remote_srv.script(ok("Done."), ok("I will call <PHONE_1> about build 12345678901."))
    router = Router([remote])  # only remote deployments, default config
    plain = await router.complete(Route(ask("port 9092 and 6379, pid 123456789, build id 12345678901")))
    assert not plain.redacted
    assert remote_srv.requests[0].body["messages"][0]["content"] == "port 9092 and 6379, pid 123456789, build id 12345678901"
    routed = await router.complete(Route(ask("build id 12345678901 failed; ring Ana on +44 20 7946 0958")))
    sent = remote_srv.requests[1].body["messages"][0]["content"]
    assert sent == "build id 12345678901 failed; ring Ana on <PHONE_1>"
    assert routed.redacted and routed.response.text == "I will call +44 20 7946 0958 about build 12345678901."


async def test_redaction_masks_pii_for_remote_calls_and_restores_it(
        make: Callable[..., tuple[Deployment, FakeOpenAI]]) -> None:
    remote, remote_srv = make("remote")
    remote_srv.script(ok("I will write to <EMAIL_1> today."))
    router = Router([remote], config=RouterConfig(redact_remote=True))
    routed = await router.complete(Route(ask("contact jane.doe@corp.example about the card 4111 1111 1111 1111")))
    sent = remote_srv.requests[0].body["messages"][0]["content"]
    assert "jane.doe@corp.example" not in sent and "4111" not in sent
    assert "<EMAIL_1>" in sent and "<CARD_1>" in sent
    assert routed.redacted and routed.response.text == "I will write to jane.doe@corp.example today."
    with pytest.raises(NoDeploymentError):  # restricted stays local even with redaction on
        await router.complete(Route(ask("x"), privacy="restricted"))


async def test_the_budget_holds_on_the_fallback_target(
        make: Callable[..., tuple[Deployment, FakeOpenAI]]) -> None:
    cheap, cheap_srv = make("cheap", price=0.1)
    pricey, pricey_srv = make("pricey", price=1000.0)
    cheap_srv.script(status(500))
    budget = Budget(limit_usd=0.01)
    with pytest.raises(BudgetExceededError, match="pricey could cost"):
        await Router([cheap, pricey]).complete(Route(ask(), budget=budget))
    assert len(cheap_srv.requests) == 1
    assert pricey_srv.requests == [], "the fallback would have broken the budget: it must not be called"
    assert budget.spent_usd == 0


async def test_spend_is_charged_from_real_usage(make: Callable[..., tuple[Deployment, FakeOpenAI]]) -> None:
    d, _ = make("m", price=2.0)
    budget = Budget(limit_usd=1.0)
    routed = await Router([d]).complete(Route(ask("count these words please"), budget=budget))
    assert routed.cost_usd > 0 and budget.spent_usd == pytest.approx(routed.cost_usd)


async def test_sticky_routing_keeps_a_project_on_one_healthy_deployment(
        make: Callable[..., tuple[Deployment, FakeOpenAI]]) -> None:
    a, a_srv = make("a")
    b, b_srv = make("b")
    servers = {"a": a_srv, "b": b_srv}
    router = Router([a, b], rng=random.Random(1), clock=Clock())
    first = (await router.complete(Route(ask(), strategy=Strategy.WEIGHTED, sticky_key="proj-1"))).deployment
    for _ in range(10):  # weighted 1:1 would spread these; stickiness keeps them together
        assert (await router.complete(Route(ask(), strategy=Strategy.WEIGHTED,
                                            sticky_key="proj-1"))).deployment == first
    servers[first].script(status(503))
    moved = await router.complete(Route(ask(), strategy=Strategy.WEIGHTED, sticky_key="proj-1"))
    assert moved.deployment != first  # unhealthy: the project moves on
    assert moved.fallback_chain == (first, moved.deployment)


async def test_context_pre_check_and_bad_requests(make: Callable[..., tuple[Deployment, FakeOpenAI]]) -> None:
    small, small_srv = make("small", price=0.1, window=1_000)
    large, large_srv = make("large", price=1.0, window=100_000)
    router = Router([small, large])
    long_prompt = ask("word " * 2_000)
    assert (await router.complete(Route(long_prompt))).deployment == "large"
    assert small_srv.requests == []
    with pytest.raises(NoDeploymentError, match="context window"):
        await router.complete(Route(ask("word " * 200_000)))
    small_srv.script(status(400, message="bad"))
    calls = len(large_srv.requests)
    with pytest.raises(BadRequestError):
        await Router([large, small]).complete(Route(ask("short", max_tokens=10)))  # cost: small first
    assert len(small_srv.requests) == 1
    assert len(large_srv.requests) == calls, "a bad request is ours: no fallback"
