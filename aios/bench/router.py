"""``aios bench router``: what routing costs.

Two measurements, each beside its baseline from the same run:

- the routing *decision* (privacy scan, tier and context checks, strategy order, stickiness), in
  µs per call for each strategy, beside a bare provider-choice baseline (picking the first
  deployment from a list) — the price of deciding at all;
- whole calls against a local OpenAI-compatible server (the wire-format fake of the test suite,
  or ``--base-url``): through the router, through the provider alone, and with the raw SDK.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import openai

from aios.agents.llm.base import ChatMessage, ChatRequest, LlmConfig
from aios.agents.llm.catalogue import load_catalogue
from aios.agents.llm.openai_provider import OpenAIProvider
from aios.agents.llm.router import Deployment, Route, Router, Strategy
from aios.agents.roles import load_roles
from aios.bench.toolkit import percentile

DEPLOYMENTS = ("openai:gpt-4o-mini", "openai:gpt-4.1-mini", "openai:gpt-4o", "anthropic:claude-haiku-4-5-20251001",
               "local:llama3.1:8b")


def _quantiles(samples_us: list[float]) -> dict[str, float]:
    return {"p50_us": round(percentile(samples_us, 50), 1), "p99_us": round(percentile(samples_us, 99), 1),
            "mean_us": round(statistics.fmean(samples_us), 1)}


def _prompt() -> ChatRequest:
    # A realistic agent prompt: the backend persona with its contract, a task and some context.
    system = load_roles().get("backend").system_prompt()
    user = "Task: Implement the orders endpoint\n\n" + "Recent context: the API uses postgres. " * 40
    return ChatRequest((ChatMessage("system", system), ChatMessage("user", user)), max_tokens=512)


def bench_decisions(decisions: int, tick: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Decision overhead per strategy over five deployments, and the first-in-list baseline."""
    catalogue = load_catalogue()
    config = LlmConfig(openai_api_key="sk-bench", anthropic_api_key="sk-bench", local_base_url="http://127.0.0.1:9")
    deployments = []
    for spec in DEPLOYMENTS:
        provider, _, model = spec.partition(":")
        info = catalogue.get(provider, model)
        # Never called: the decision is measured, so a placeholder client is enough.
        deployments.append(Deployment(spec, OpenAIProvider(model, config=config), info))
    router = Router(deployments)
    request = _prompt()
    out: dict[str, Any] = {"deployments": len(deployments), "decisions": decisions, "prompt_chars":
                           sum(len(m.content) for m in request.messages), "strategies": {}}
    system, user = request.messages
    for strategy in Strategy:
        # A new user message per decision (as every task has), so no cache answers for it.
        routes = [Route(ChatRequest((system, ChatMessage("user", f"{user.content} request {i}")), max_tokens=512),
                        tier="small", strategy=strategy, sticky_key="bench-project") for i in range(decisions)]
        samples = []
        for route in routes:
            started = time.perf_counter_ns()
            router.candidates(route)
            samples.append((time.perf_counter_ns() - started) / 1000)
        out["strategies"][strategy.value] = _quantiles(samples)
        if tick:
            tick(decisions)
    baseline = []
    for _ in range(decisions):
        started = time.perf_counter_ns()
        _ = [d for d in deployments if d.cooldown_until <= 0.0][0]
        baseline.append((time.perf_counter_ns() - started) / 1000)
    out["baseline_first_in_list"] = _quantiles(baseline)
    return out


async def bench_calls(base_url: str, calls: int, tick: Callable[[int], None] | None = None) -> dict[str, Any]:
    """calls/s and per-call latency: raw SDK, provider, router — sequential, same server, same run."""
    config = LlmConfig(openai_api_key="sk-bench", openai_base_url=base_url, timeout_s=30)
    provider = OpenAIProvider("gpt-4o-mini", config=config)
    router = Router.single(provider)
    sdk = openai.AsyncOpenAI(api_key="sk-bench", base_url=base_url, max_retries=0, timeout=30)
    request = ChatRequest((ChatMessage("user", "Say hello"),), max_tokens=64)

    async def raw() -> None:
        stream = await sdk.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hello"}], max_completion_tokens=64,
            stream=True, stream_options={"include_usage": True})
        async with stream:
            async for _ in stream:
                pass

    async def direct() -> None:
        await provider.complete(request)

    async def routed() -> None:
        await router.complete(Route(request))

    out: dict[str, Any] = {"calls": calls}
    try:
        for name, one in (("raw_sdk", raw), ("provider", direct), ("router", routed)):
            await one()  # warm the connection pool
            samples = []
            started = time.perf_counter()
            for _ in range(calls):
                t0 = time.perf_counter_ns()
                await one()
                samples.append((time.perf_counter_ns() - t0) / 1000)
            elapsed = time.perf_counter() - started
            out[name] = {"calls_per_s": round(calls / elapsed, 1), **_quantiles(samples)}
            if tick:
                tick(calls)
    finally:
        await provider.aclose()
        await sdk.close()
    out["router_over_provider_p50_us"] = round(out["router"]["p50_us"] - out["provider"]["p50_us"], 1)
    return out


@contextmanager
def local_server(base_url: str | None) -> Iterator[str]:
    """``base_url``, or the shipped OpenAI wire-format server started for the run."""
    if base_url:
        yield base_url
        return
    from aios.agents.llm.servers.openai import FakeOpenAI

    with FakeOpenAI() as server:
        yield server.base_url


def bench_router(*, decisions: int, calls: int, base_url: str | None,
                 tick: Callable[[int], None] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"decision": bench_decisions(decisions, tick)}
    with local_server(base_url) as url:
        doc["calls"] = asyncio.run(bench_calls(url, calls, tick))
    return doc
