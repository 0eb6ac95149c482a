"""``aios bench router``: what routing and its limits cost.

Measurements, each beside its baseline from the same run:

- the routing *decision* (privacy scan, tier and context checks, strategy order, stickiness), in
  µs per call for each strategy, beside a bare provider-choice baseline (picking the first
  deployment from a list) — the price of deciding at all;
- the *limiter* alone: a call's admission and release on a deployment with every limit
  (max_concurrent, rpm, tpm, none of them binding), beside one with none;
- whole calls against a local OpenAI-compatible server (the shipped wire-format server, or
  ``--base-url``), one at a time: the raw SDK, the provider alone, the router, and the router with
  limits that never bind;
- the same four paths with ``--concurrency`` calls in flight at once, where the limiter keeps its
  queues: calls/s and per-call latency.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import openai

from aios.agents.llm.base import ChatMessage, ChatRequest, LlmConfig
from aios.agents.llm.catalogue import load_catalogue
from aios.agents.llm.limits import Admission, Gate, Limits
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


ROUNDS = 5  # turns the call paths take
# Limits that a bench never reaches: the limiter does all its work, and nothing waits.
NEVER_BINDING = Limits(max_concurrent=100_000, rpm=1e9, tpm=1e12)


def bench_limiter(admissions: int, tick: Callable[[int], None] | None = None) -> dict[str, Any]:
    """µs per admission and release through the limiter's core, with every limit and with none."""
    out: dict[str, Any] = {"admissions": admissions}
    for name, limits in (("limited", NEVER_BINDING), ("baseline_no_limits", Limits())):
        gate = Gate("bench", limits, now=time.monotonic())
        core = Admission([gate])
        samples = []
        for _ in range(admissions):
            started = time.perf_counter_ns()
            now = time.monotonic()
            core.enter([gate], 600, now)
            gate.release(600, 400, now)
            samples.append((time.perf_counter_ns() - started) / 1000)
        out[name] = _quantiles(samples)
        if tick:
            tick(admissions)
    return out


async def bench_calls(base_url: str, calls: int, concurrency: int,
                      tick: Callable[[int], None] | None = None) -> dict[str, Any]:
    """calls/s and per-call latency: raw SDK, provider, router, router with limits — one at a time,
    then ``concurrency`` at once; same server, same run."""
    config = LlmConfig(openai_api_key="sk-bench", openai_base_url=base_url, timeout_s=30)
    provider = OpenAIProvider("gpt-4o-mini", config=config)
    router = Router.single(provider)
    info = load_catalogue().get("openai", "gpt-4o-mini")
    limited = Router([Deployment(info.spec, provider, info, limits=NEVER_BINDING)])
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

    async def routed_limited() -> None:
        await limited.complete(Route(request))

    paths = (("raw_sdk", raw), ("provider", direct), ("router", routed), ("router_limited", routed_limited))
    out: dict[str, Any] = {"calls": calls, "concurrency": concurrency, "rounds": ROUNDS}
    # The paths take turns, a share of the calls each per round, so a busy machine's load at one
    # moment weighs on every path alike.
    samples: dict[str, dict[str, list[float]]] = {"sequential": {n: [] for n, _ in paths},
                                                   "concurrent": {n: [] for n, _ in paths}}
    elapsed: dict[str, dict[str, float]] = {"sequential": dict.fromkeys(samples["sequential"], 0.0),
                                            "concurrent": dict.fromkeys(samples["concurrent"], 0.0)}
    share = max(1, calls // ROUNDS)
    try:
        for _, one in paths:
            await one()  # warm the connection pools
        for _ in range(ROUNDS):
            for name, one in paths:
                started = time.perf_counter()
                for _ in range(share):
                    t0 = time.perf_counter_ns()
                    await one()
                    samples["sequential"][name].append((time.perf_counter_ns() - t0) / 1000)
                elapsed["sequential"][name] += time.perf_counter() - started
                started = time.perf_counter()
                samples["concurrent"][name] += await _concurrently(one, share, concurrency)
                elapsed["concurrent"][name] += time.perf_counter() - started
                if tick:
                    tick(2 * share)
    finally:
        await provider.aclose()
        await sdk.close()
    for mode, by_path in samples.items():
        out[mode] = {name: {"calls_per_s": round(len(got) / elapsed[mode][name], 1), **_quantiles(got)}
                     for name, got in by_path.items()}
    seq = out["sequential"]
    out["router_over_provider_p50_us"] = round(seq["router"]["p50_us"] - seq["provider"]["p50_us"], 1)
    out["limits_over_router_p50_us"] = round(seq["router_limited"]["p50_us"] - seq["router"]["p50_us"], 1)
    return out


async def _concurrently(one: Callable[[], Any], calls: int, concurrency: int) -> list[float]:
    """µs per call of ``calls`` calls, ``concurrency`` in flight at once (workers taking the next)."""
    samples: list[float] = []
    left = iter(range(calls))

    async def worker() -> None:
        for _ in left:
            t0 = time.perf_counter_ns()
            await one()
            samples.append((time.perf_counter_ns() - t0) / 1000)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples


@contextmanager
def local_server(base_url: str | None) -> Iterator[str]:
    """``base_url``, or the shipped OpenAI wire-format server started for the run in a process of its
    own, so its threads do not share this process's interpreter with the calls being timed."""
    if base_url:
        yield base_url
        return
    context = multiprocessing.get_context("spawn")
    ready: Any = context.Queue()
    stop = context.Event()
    server = context.Process(target=_serve, args=(ready, stop), name="bench-llm", daemon=True)
    server.start()
    try:
        yield str(ready.get(timeout=60))
    finally:
        stop.set()
        server.join(timeout=10)
        if server.is_alive():
            server.kill()


def _serve(ready: Any, stop: Any) -> None:
    from aios.agents.llm.servers.openai import FakeOpenAI

    with FakeOpenAI() as fake:
        ready.put(fake.base_url)
        stop.wait()


def bench_router(*, decisions: int, calls: int, concurrency: int, base_url: str | None,
                 tick: Callable[[int], None] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"decision": bench_decisions(decisions, tick), "limiter": bench_limiter(decisions, tick)}
    with local_server(base_url) as url:
        doc["calls"] = asyncio.run(bench_calls(url, calls, concurrency, tick))
    return doc
