"""The router's limits with real SDK clients against the wire-format server: hundreds of calls at
once, 429 storms, hangs, queue timeouts, cancellation, and least-busy on live load."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from aios.agents.errors import (
    CoolingDownError,
    NoDeploymentError,
    ProviderTimeoutError,
    QueueTimeoutError,
    RateLimitError,
)
from aios.agents.llm.base import ChatMessage, ChatRequest, ChatResponse, LlmConfig, Usage
from aios.agents.llm.catalogue import ModelInfo
from aios.agents.llm.limits import Limits, Tuning
from aios.agents.llm.openai_provider import OpenAIProvider
from aios.agents.llm.router import Deployment, Route, Router, RouterConfig, Strategy
from aios.agents.llm.servers.openai import Behaviour, FakeOpenAI, slow_first_token, status


class CountingOpenAI(FakeOpenAI):
    """The wire-format server, counting the requests it is answering at once (and the most ever)."""

    def __init__(self, default: Behaviour | None = None) -> None:
        super().__init__()
        self.now = 0
        self.peak = 0
        # The calls the client has open at once. The server's own count can run one over a limit for
        # a moment: its thread finishes a call after the client has read the answer and let the next
        # one in. The limits are the client's, so they are checked here.
        self.calling = 0
        self.client_peak = 0
        self.started: list[float] = []
        self._count = threading.Lock()
        self._default = default

    def default(self) -> Behaviour:
        return self._default or super().default()

    def handler(self) -> type[BaseHTTPRequestHandler]:
        base = super().handler()
        fake = self

        class Counting(base):  # type: ignore[valid-type, misc]
            def do_POST(self) -> None:
                with fake._count:
                    fake.now += 1
                    fake.peak = max(fake.peak, fake.now)
                    fake.started.append(time.monotonic())
                try:
                    super().do_POST()
                finally:
                    with fake._count:
                        fake.now -= 1

        return Counting


def info(name: str, price: float = 1.0) -> ModelInfo:
    return ModelInfo(provider="openai", model=name, context_window=128_000, input_per_mtok=price,
                     cached_input_per_mtok=price / 2, output_per_mtok=price * 4, tier="small", local=False)


@pytest.fixture
async def make() -> AsyncIterator[Callable[..., tuple[Deployment, CountingOpenAI]]]:
    servers: list[CountingOpenAI] = []
    providers: list[OpenAIProvider] = []

    def build(name: str, limits: Limits | None = None, *, price: float = 1.0, timeout_s: float = 10.0,
              default: Behaviour | None = None) -> tuple[Deployment, CountingOpenAI]:
        server = CountingOpenAI(default).start()
        servers.append(server)
        provider = OpenAIProvider(name, config=LlmConfig(openai_api_key="sk-test", openai_base_url=server.base_url,
                                                         timeout_s=timeout_s))
        providers.append(provider)
        real = provider.complete

        async def counted(request: ChatRequest, **kwargs: Any) -> ChatResponse:
            server.calling += 1
            server.client_peak = max(server.client_peak, server.calling)
            try:
                return await real(request, **kwargs)
            finally:
                server.calling -= 1

        provider.complete = counted  # type: ignore[method-assign]
        return Deployment(name, provider, info(name, price), limits=limits or Limits()), server

    yield build
    for p in providers:
        await p.aclose()
    for s in servers:
        s.stop()


def ask(text: str = "hello", max_tokens: int = 50) -> Route:
    return Route(ChatRequest(messages=(ChatMessage("user", text),), max_tokens=max_tokens))


async def test_500_calls_at_once_never_exceed_max_concurrent_at_the_server(
        make: Callable[..., tuple[Deployment, CountingOpenAI]]) -> None:
    d, server = make("m", Limits(max_concurrent=20), default=slow_first_token(0.02))
    router = Router([d])
    routed = await asyncio.gather(*(router.complete(ask(f"call {i}")) for i in range(500)))
    assert len(routed) == 500 and len(server.requests) == 500
    assert server.client_peak <= 20, f"{server.client_peak} calls were open at once"
    assert server.peak >= 10, "the limit, not something else, held the calls back"
    assert max(r.queue_ms for r in routed) > 0 and d.in_flight == 0 and d.waiting == 0


class StartTimes:
    """A router observer that notes when each call started (just after it was let through)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def decision(self, strategy: str, deployment: str) -> None:
        self.times.append(time.monotonic())

    def cooldown(self, deployment: str, reason: str) -> None: ...

    def queued(self, deployment: str, seconds: float) -> None: ...

    def load(self, deployment: str, in_flight: int, waiting: int) -> None: ...


async def test_requests_per_minute_pace_the_calls(make: Callable[..., tuple[Deployment, CountingOpenAI]]) -> None:
    # The bucket starts full and filling when the deployment is made, a moment before the first call
    # starts: the envelope is measured from before that, so the moment cannot fail the test.
    made = time.monotonic()
    d, server = make("m", Limits(rpm=1200))  # 20/s, a bucket of one second: 20 at once
    starts = StartTimes()
    router = Router([d], config=RouterConfig(tuning=Tuning(burst_s=1.0)), observer=starts)
    await asyncio.gather(*(router.complete(ask(f"call {i}")) for i in range(50)))
    assert len(server.requests) == 50
    # The k-th call started at least (k - 20) / 20 s after that: a busy machine can only make it
    # later. (The exact envelope is tests/unit/agents/test_limits.py's property.)
    for k, t in enumerate(sorted(starts.times), start=1):
        assert t - made >= (k - 20) / 20 - 0.001, f"call {k} started after {t - made:.3f}s"


async def test_tokens_per_minute_are_reserved_then_settled_with_the_real_usage(
        make: Callable[..., tuple[Deployment, CountingOpenAI]]) -> None:
    d, _ = make("m", Limits(tpm=60_000))  # 1,000 tokens/s, a bucket of 1,000
    router = Router([d])
    await router.complete(ask("four words right here", max_tokens=900))
    bucket = d.gate._tokens
    assert bucket is not None
    # The fake reports ~10 tokens used: the rest of the 900+ reserved came back.
    assert bucket.level > 900
    with pytest.raises(NoDeploymentError, match="more than a minute of any eligible deployment's tpm.*m: 60000"):
        await router.complete(ask("x", max_tokens=70_000))


async def test_a_deployment_that_429s_everything_cools_down_shrinks_and_every_call_falls_back(
        make: Callable[..., tuple[Deployment, CountingOpenAI]]) -> None:
    cheap, cheap_srv = make("cheap", Limits(max_concurrent=10), price=0.1, default=status(429, retry_after=1))
    backup, backup_srv = make("backup", price=1.0)
    router = Router([cheap, backup], config=RouterConfig(max_retries=0))
    routed = await asyncio.gather(*(router.complete(ask(f"task {i}")) for i in range(200)))
    assert all(r.deployment == "backup" for r in routed), "none is lost: every call answered by the backup"
    assert len(backup_srv.requests) == 200
    # The cheap one was asked only by the calls on their way before its first 429 came back.
    assert 1 <= len(cheap_srv.requests) <= 10
    assert cheap.cooldown_until > 0, "it cooled down for its retry-after"
    assert cheap.gate.rate.reduced is not None, "its request rate was cut"
    assert cheap.gate.rpm(time.monotonic()) is not None


async def test_with_one_deployment_a_429_storm_waits_rather_than_fails(
        make: Callable[..., tuple[Deployment, CountingOpenAI]]) -> None:
    only, server = make("only")
    server.script(*[status(429, retry_after=0.3)] * 5)
    router = Router([only], config=RouterConfig(max_retries=3))
    started = time.monotonic()
    routed = await asyncio.gather(*(router.complete(ask(f"task {i}")) for i in range(40)))
    assert len(routed) == 40
    assert time.monotonic() - started >= 0.3
    assert max(r.queue_ms for r in routed) >= 250, "the retries waited out the retry-after in the queue"
    # Paused, then paced at the cut rate: far fewer requests than 40 calls each retrying on their own.
    assert len(server.requests) <= 40 + 5
    assert only.gate.rate.reduced is not None


async def test_a_retry_after_beyond_the_queue_time_fails_at_once_saying_when(
        make: Callable[..., tuple[Deployment, CountingOpenAI]]) -> None:
    only, server = make("only")
    server.script(status(429, retry_after=30))
    router = Router([only], config=RouterConfig(max_retries=2, max_queue_s=5))
    started = time.monotonic()
    with pytest.raises(CoolingDownError, match="ready again in (29|30)") as caught:
        await router.complete(ask())
    assert time.monotonic() - started < 2
    assert isinstance(caught.value, RateLimitError) and caught.value.retry_after == pytest.approx(30, abs=1)
    assert len(server.requests) == 1


async def test_a_hang_holds_its_slot_only_until_the_timeout(
        make: Callable[..., tuple[Deployment, CountingOpenAI]]) -> None:
    d, server = make("m", Limits(max_concurrent=1), timeout_s=0.5)
    server.script(slow_first_token(5.0), slow_first_token(0.0, "next"))
    router = Router([d], config=RouterConfig(max_retries=0))
    started = time.monotonic()
    hung, second = await asyncio.gather(router.complete(ask("hang")), router.complete(ask("next")),
                                        return_exceptions=True)
    assert isinstance(hung, ProviderTimeoutError)
    assert not isinstance(second, BaseException) and second.response.text == "next"
    # About the 0.5 s timeout (timers on a loaded machine are coarse), far from the 5 s hang.
    assert 0.3 <= second.queue_ms / 1000 < 2.0, "the second call waited for the hung one's timeout, no longer"
    assert time.monotonic() - started < 3
    # The server still sleeps on the abandoned request; the second reached it after the timeout.
    assert len(server.started) == 2 and server.started[1] - server.started[0] >= 0.4


async def test_no_room_within_the_queue_time_is_a_clear_retryable_error(
        make: Callable[..., tuple[Deployment, CountingOpenAI]]) -> None:
    d, server = make("m", Limits(max_concurrent=1))
    server.script(slow_first_token(1.0))
    router = Router([d], config=RouterConfig(max_queue_s=0.2))
    slow = asyncio.create_task(router.complete(ask()))
    await asyncio.sleep(0.05)
    with pytest.raises(QueueTimeoutError, match=r"no deployment had room within 0\.2s \(m: 1 in flight, 0 waiting\)"
                       ".*max_concurrent, rpm, tpm in AIOS_LLM_CONFIG"):
        await router.complete(ask())
    assert isinstance(QueueTimeoutError("x", provider="router"), RateLimitError)  # the orchestrator retries it
    await slow
    assert d.in_flight == 0 and d.waiting == 0


async def test_a_cancelled_call_gives_its_place_and_its_slot_back(
        make: Callable[..., tuple[Deployment, CountingOpenAI]]) -> None:
    d, server = make("m", Limits(max_concurrent=1))
    server.script(slow_first_token(0.3), slow_first_token(5.0))
    router = Router([d])
    first = asyncio.create_task(router.complete(ask("first")))
    await asyncio.sleep(0.05)
    waiting = asyncio.create_task(router.complete(ask("waits")))
    await asyncio.sleep(0.05)
    assert d.waiting == 1
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert d.waiting == 0
    await first
    running = asyncio.create_task(router.complete(ask("runs")))
    await asyncio.sleep(0.2)
    assert d.in_flight == 1
    running.cancel()  # mid-call: the slot is free again at once
    with pytest.raises(asyncio.CancelledError):
        await running
    assert d.in_flight == 0
    assert (await router.complete(ask("after"))).deployment == "m"


async def test_least_busy_counts_the_calls_waiting_too(make: Callable[..., tuple[Deployment, CountingOpenAI]]) -> None:
    a, _ = make("a", Limits(max_concurrent=1))
    b, _ = make("b", Limits(max_concurrent=4))
    router = Router([a, b])
    a.gate.in_flight, a.gate.waiting = 1, 3
    b.gate.in_flight = 2
    assert [d.name for d in router.candidates(Route(ask().request, strategy=Strategy.LEAST_BUSY))[0]] == ["b", "a"]
    a.gate.in_flight, a.gate.waiting, b.gate.in_flight = 0, 0, 0


async def test_calls_spread_over_deployments_as_they_free_up(
        make: Callable[..., tuple[Deployment, CountingOpenAI]]) -> None:
    cheap, cheap_srv = make("cheap", Limits(max_concurrent=5), price=0.1, default=slow_first_token(0.05))
    dear, dear_srv = make("dear", Limits(max_concurrent=5), price=1.0, default=slow_first_token(0.05))
    router = Router([cheap, dear])
    routed = await asyncio.gather(*(router.complete(ask(f"t{i}")) for i in range(100)))
    assert {r.deployment for r in routed} == {"cheap", "dear"}, "a full deployment overflows to the next"
    assert cheap_srv.client_peak <= 5 and dear_srv.client_peak <= 5
    # The order of the later calls depends on which deployment frees up first; the first ten do not.
    assert [r.deployment for r in routed[:10]] == ["cheap"] * 5 + ["dear"] * 5, "the cheaper one is offered first"


class DeltaProvider:
    """A provider that streams its answer to ``on_delta`` (the shape providers take it in)."""

    name = "openai"
    model = "delta"
    offline = False

    async def complete(self, request: ChatRequest, *, on_delta: Callable[[str], None] | None = None) -> ChatResponse:
        for piece in ("one ", "two"):
            if on_delta is not None:
                on_delta(piece)
        return ChatResponse("one two", self.name, self.model, Usage(1, 2), 1.0, 0.5)

    async def aclose(self) -> None:
        """Nothing to close."""


async def test_on_delta_reaches_the_provider_only_when_given() -> None:
    router = Router([Deployment("delta", DeltaProvider(), info("delta"))])
    pieces: list[str] = []
    routed = await router.complete(ask(), on_delta=pieces.append)
    assert pieces == ["one ", "two"] and routed.response.text == "one two"
    assert (await router.complete(ask())).response.text == "one two"


def test_the_router_observer_sees_waits_and_load() -> None:
    seen: list[tuple[Any, ...]] = []

    class Observer:
        def decision(self, strategy: str, deployment: str) -> None:
            seen.append(("decision", deployment))

        def cooldown(self, deployment: str, reason: str) -> None:
            seen.append(("cooldown", deployment, reason))

        def queued(self, deployment: str, seconds: float) -> None:
            seen.append(("queued", deployment, seconds >= 0))

        def load(self, deployment: str, in_flight: int, waiting: int) -> None:
            seen.append(("load", deployment, in_flight, waiting))

    router = Router([Deployment("delta", DeltaProvider(), info("delta"))], observer=Observer())
    asyncio.run(router.complete(ask()))
    assert seen == [("decision", "delta"), ("queued", "delta", True), ("load", "delta", 1, 0),
                    ("load", "delta", 0, 0)]
