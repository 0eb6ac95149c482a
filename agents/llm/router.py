"""The LLM router: picks a deployment per call, keeps to its limits, falls back, cools down, and
keeps to budgets.

Every decision is made here, in one place: which deployments may see the prompt (privacy, tier,
context window, tokens per minute), their order (the strategy, and stickiness per project or
session), when a call may start (each deployment's concurrent calls, requests and tokens per
minute, and the pause a 429 asks for: see ``limits.py``), and what happens on failure. A
transient failure (408, 409, 429, 5xx, 529, timeouts, a dropped connection) falls back to the next
eligible deployment at once; when none is left the router retries, up to
``RouterConfig.max_retries`` times. A 429 pauses its deployment for the retry-after and cuts its
request rate, so the retry (and every other call) waits in the deployment's queue rather than
sleeping on its own; other failures back off exponentially. A call waits for room at most
``RouterConfig.max_queue_s`` in all. The vendor SDKs run with their own retries off
(``max_retries=0``), so a call is never retried in two places.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from aios.agents.errors import (
    BadRequestError,
    BudgetExceededError,
    ContextTooLongError,
    CoolingDownError,
    LLMError,
    NoDeploymentError,
    OverloadedError,
    ProviderAuthError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    QueueTimeoutError,
    RateLimitError,
)
from aios.agents.llm.base import ChatRequest, ChatResponse, Provider, Usage
from aios.agents.llm.catalogue import TIERS, Catalogue, ModelInfo, Tier, cost_usd, load_catalogue
from aios.agents.llm.limits import Admission, AsyncAdmission, Gate, Limits, QueueTimeout, SharedRates, Tuning
from aios.agents.llm.privacy import PiiDetector, Redaction
from aios.schemas.errors import AiosError

log = logging.getLogger(__name__)

DeltaCallback = Callable[[str], None]  # called with each piece of answer text as it streams in


class Strategy(enum.StrEnum):
    COST = "cost"  # cheapest deployment that meets the tier and the context size
    LATENCY = "latency"  # lowest EWMA of time-to-first-token
    LEAST_BUSY = "least-busy"  # fewest calls in flight
    WEIGHTED = "weighted"  # random, proportional to weights


@dataclass
class Deployment:
    """A model behind a provider client, with its catalogue entry, its limits and live health."""

    name: str
    provider: Provider
    info: ModelInfo
    weight: float = 1.0
    limits: Limits = field(default_factory=Limits)
    ttft_ewma_ms: float | None = None
    gate: Gate = field(init=False, repr=False)  # live load and limits; the router rebuilds it with its tuning

    def __post_init__(self) -> None:
        self.gate = Gate(self.name, self.limits)

    @property
    def local(self) -> bool:
        return self.info.local

    @property
    def in_flight(self) -> int:
        return self.gate.in_flight

    @property
    def waiting(self) -> int:
        return self.gate.waiting

    @property
    def cooldown_until(self) -> float:
        return self.gate.paused_until


@dataclass
class Budget:
    """A spend limit; checked before every attempt with that attempt's worst-case cost."""

    limit_usd: float
    spent_usd: float = 0.0

    def allows(self, worst_case_usd: float) -> bool:
        return self.spent_usd + worst_case_usd <= self.limit_usd + 1e-12


@dataclass(frozen=True)
class Route:
    """What one call asks of the router."""

    request: ChatRequest
    tier: Tier = "small"
    strategy: Strategy = Strategy.COST
    privacy: str = "normal"  # "restricted" keeps the call on local deployments
    sticky_key: str | None = None  # project or session: keep its provider prompt cache warm
    budget: Budget | None = None


@dataclass(frozen=True)
class Routed:
    """The answer, and everything the LlmCall event records about how it was obtained."""

    response: ChatResponse
    deployment: str
    strategy: Strategy
    cost_usd: float
    fallback_chain: tuple[str, ...]  # deployments tried, in order, the last one answered
    redacted: bool
    queue_ms: float = 0.0  # time spent waiting for a deployment to have room (its limits, a 429's pause)


@dataclass
class RouterConfig:
    ewma_alpha: float = 0.3
    base_cooldown_s: float = 5.0
    max_cooldown_s: float = 300.0
    # A prompt with detected PII goes to remote deployments masked (and the answer restored); off,
    # it stays on local deployments and fails without one. Restricted tasks stay local either way.
    redact_remote: bool = True
    chars_per_token: float = 4.0  # the context pre-check's estimate (conservative for English)
    max_retries: int = 2  # retries of a transient failure once no other deployment is left to try
    retry_base_s: float = 0.5  # first backoff; doubles each retry, with jitter
    retry_max_s: float = 20.0  # the longest backoff between retries of a failure other than a 429
    max_queue_s: float = 120.0  # the longest a call waits, in all, for a deployment to have room
    tuning: Tuning = field(default_factory=Tuning)  # token-bucket depth; how 429s cut a rate, how it recovers


class RouterObserver(Protocol):
    """Told of every decision, cooldown and wait (``streams`` counts them in Prometheus)."""

    def decision(self, strategy: str, deployment: str) -> None: ...

    def cooldown(self, deployment: str, reason: str) -> None: ...

    def queued(self, deployment: str, seconds: float) -> None:
        """A call waited ``seconds`` before it started on ``deployment`` (0 when it did not wait)."""
        ...

    def load(self, deployment: str, in_flight: int, waiting: int) -> None:
        """The live load of ``deployment`` after a call started or ended."""
        ...


# Failures of the provider's moment, not of the request: worth another try after a pause.
TRANSIENT_ERRORS = (RateLimitError, OverloadedError, ProviderTimeoutError, ProviderUnavailableError)
# Raised by the router itself, not by a provider: never retried here (the caller backs off).
_ROUTER_ERRORS = (CoolingDownError, QueueTimeoutError)
_TIER_RANK = {t: i for i, t in enumerate(TIERS)}


@dataclass
class Router:
    deployments: Sequence[Deployment]
    config: RouterConfig = field(default_factory=RouterConfig)
    detector: PiiDetector = field(default_factory=PiiDetector)
    clock: Callable[[], float] = time.monotonic
    rng: random.Random = field(default_factory=random.Random)
    observer: RouterObserver | None = None
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    shared: SharedRates | None = None  # rpm and tpm shared with other processes (Redis, from streams)
    _sticky: dict[str, str] = field(default_factory=dict)
    _admission: AsyncAdmission = field(init=False, repr=False)

    def __post_init__(self) -> None:
        now = self.clock()
        for d in self.deployments:
            d.gate = Gate(d.name, d.limits, self.config.tuning, now)
        self._admission = AsyncAdmission(Admission([d.gate for d in self.deployments]), self.clock)

    @classmethod
    def single(cls, provider: Provider, *, catalogue: Catalogue | None = None, **kwargs: object) -> Router:
        """A router over one provider: the same decisions path, one deployment to choose."""
        info = (catalogue or load_catalogue()).get(provider.name, provider.model)  # unknown: an error
        return cls([Deployment(info.spec, provider, info)], **kwargs)  # type: ignore[arg-type]

    def cap_tier(self, tier: Tier) -> Tier:
        """``tier``, lowered to the best tier configured: a role's default tier is a preference,
        so a setup with only small models still serves a role that prefers large ones."""
        best = max((_TIER_RANK[d.info.tier] for d in self.deployments), default=0)
        return TIERS[min(_TIER_RANK[tier], best)]

    def candidates(self, route: Route) -> tuple[list[Deployment], bool]:
        """Eligible deployments in the order to try them, and whether the prompt must be redacted."""
        now = self.clock()
        texts = [m.content for m in route.request.messages]
        sensitive = route.privacy == "restricted" or self.detector.contains_pii(texts)
        redact = False
        pool = [d for d in self.deployments if _TIER_RANK[d.info.tier] >= _TIER_RANK[route.tier]]
        if sensitive:
            # Restricted data never leaves; detected PII may, masked, when redaction is on.
            if route.privacy != "restricted" and self.config.redact_remote:
                redact = True
            else:
                pool = [d for d in pool if d.local]
                if not pool:
                    why = ("the task is restricted" if route.privacy == "restricted"
                           else "the prompt contains PII and redaction is off (AIOS_LLM_PII=local-only)")
                    raise NoDeploymentError(
                        f"{why}, and no local deployment (tier {route.tier}+) is configured: add one "
                        "(AIOS_LLM_DEPLOYMENTS=…,local:<model>)"
                        + ("" if route.privacy == "restricted" else " or set AIOS_LLM_PII=redact"),
                        provider="router",
                    )
        need = self.reservation(route.request)
        fits = [d for d in pool if d.info.context_window >= need]
        if not fits:
            raise NoDeploymentError(
                f"no deployment of tier {route.tier}+ has a context window of {need} tokens", provider="router"
            )
        within = [d for d in fits if d.gate.fits(need)]
        if not within:
            raise NoDeploymentError(
                f"the call needs up to {need} tokens, more than a minute of any eligible deployment's tpm "
                f"({', '.join(f'{d.name}: {d.limits.tpm:g}' for d in fits)}): raise tpm in AIOS_LLM_CONFIG "
                "or lower the prompt or max_tokens", provider="router")
        healthy = [d for d in within if d.cooldown_until <= now]
        cooling = sorted((d for d in within if d.cooldown_until > now), key=lambda d: d.cooldown_until)
        ordered = self._order(healthy, route)
        sticky = self._sticky.get(route.sticky_key) if route.sticky_key else None
        if sticky is not None:
            ordered.sort(key=lambda d: d.name != sticky)  # stable: the sticky one first, others keep order
        return ordered + cooling, redact

    def _order(self, pool: list[Deployment], route: Route) -> list[Deployment]:
        if route.strategy is Strategy.COST:
            worst = Usage(input_tokens=self.estimate_tokens(route.request), output_tokens=route.request.max_tokens)
            return sorted(pool, key=lambda d: (cost_usd(d.info, worst), d.name))  # one estimate for all
        if route.strategy is Strategy.LATENCY:
            # Unmeasured deployments go first, so every one gets measured.
            return sorted(pool, key=lambda d: (d.ttft_ewma_ms is not None, d.ttft_ewma_ms or 0.0, d.name))
        if route.strategy is Strategy.LEAST_BUSY:
            # Calls waiting for a deployment are its load too, as much as those it is answering.
            return sorted(pool, key=lambda d: (d.in_flight + d.waiting, d.name))
        remaining, out = list(pool), []
        while remaining:
            pick = self.rng.choices(remaining, weights=[max(d.weight, 0.0) + 1e-9 for d in remaining])[0]
            remaining.remove(pick)
            out.append(pick)
        return out

    def estimate_tokens(self, request: ChatRequest) -> int:
        chars = sum(len(m.content) for m in request.messages)
        return int(chars / self.config.chars_per_token) + 4 * len(request.messages)

    def reservation(self, request: ChatRequest) -> int:
        """The most tokens a call can use: the prompt's estimate plus ``max_tokens``."""
        return self.estimate_tokens(request) + request.max_tokens

    def worst_case_cost(self, d: Deployment, request: ChatRequest) -> float:
        return cost_usd(d.info, Usage(input_tokens=self.estimate_tokens(request), output_tokens=request.max_tokens))

    async def complete(self, route: Route, *, on_delta: DeltaCallback | None = None) -> Routed:
        """Call the first deployment that answers; raise the last error when none does.

        Eligible deployments are tried in order, each once, each when it has room (waiting for it
        at most ``config.max_queue_s`` in all); a transient failure of the last one left is retried,
        up to ``config.max_retries`` times. ``on_delta`` receives the answer's text as it streams.
        """
        candidates, redact = self.candidates(route)
        need = self.reservation(route.request)
        deadline = self.clock() + self.config.max_queue_s
        chain: list[str] = []
        tried: set[str] = set()
        last: LLMError | None = None
        retries = 0
        queued_s = 0.0
        while True:
            pool = [d for d in candidates if d.name not in tried]
            if route.budget is not None:
                pool, over = self._within_budget(pool, route)
                if not pool and over is not None:
                    raise over  # what is left to try could break the budget: it is not called
            if not pool:
                if last is None:
                    raise NoDeploymentError("no deployment is available", provider="router")
                if retries >= self.config.max_retries or not self._retryable(last):
                    raise last
                retries += 1
                if not isinstance(last, RateLimitError):  # a 429's wait is its deployment's pause
                    await self.sleep(self._backoff(retries - 1))
                tried.clear()
                continue
            started = self.clock()
            d = await self._admit(pool, need, deadline, route)
            try:
                await self._take_shared(d, need, deadline)
            except BaseException:
                self._admission.release(d.gate, need, 0)
                raise
            waited = self.clock() - started
            queued_s += waited
            chain.append(d.name)
            if self.observer is not None:
                self.observer.decision(route.strategy.value, d.name)
                self.observer.queued(d.name, waited)
                self.observer.load(d.name, d.in_flight, d.waiting)
            masking = Redaction() if redact and not d.local else None
            request = _masked(route.request, masking, self.detector)
            used: int | None = 0  # a failed call gives its tokens back
            try:
                response = await self._call(d, request, on_delta)
            except LLMError as exc:
                last = exc
                tried.add(d.name)
                self._on_failure(d, exc)
                await self._give_back_shared(d, need)
                if isinstance(exc, BadRequestError) and not isinstance(exc, ContextTooLongError):
                    raise  # our request is wrong: another deployment will not fix it
                continue
            except BaseException:
                used = None  # cancelled mid-call: the provider may have counted it
                raise
            else:
                total = response.usage.input_tokens + response.usage.output_tokens
                used = total if total > 0 else None  # a server that reports no usage keeps the reservation
            finally:
                self._admission.release(d.gate, need, used)
                if self.observer is not None:
                    self.observer.load(d.name, d.in_flight, d.waiting)
            if used is not None:
                await self._give_back_shared(d, need - used)
            self._on_success(d, response, route)
            if masking is not None:
                response = replace(response, text=masking.restore(response.text))
            cost = cost_usd(d.info, response.usage)
            if route.budget is not None:
                route.budget.spent_usd += cost
            return Routed(response, d.name, route.strategy, cost, tuple(chain), masking is not None,
                          queue_ms=queued_s * 1000)

    async def _call(self, d: Deployment, request: ChatRequest, on_delta: DeltaCallback | None) -> ChatResponse:
        if on_delta is None:
            return await d.provider.complete(request)
        # Through a plain callable: providers take on_delta once they stream tokens to callers.
        complete: Callable[..., Awaitable[ChatResponse]] = d.provider.complete
        return await complete(request, on_delta=on_delta)

    def _within_budget(self, pool: list[Deployment], route: Route) -> tuple[list[Deployment], LLMError | None]:
        assert route.budget is not None  # noqa: S101 - the caller checked
        budget = route.budget
        kept = [d for d in pool if budget.allows(self.worst_case_cost(d, route.request))]
        over = next((d for d in pool if d not in kept), None)
        if over is None:
            return kept, None
        worst = self.worst_case_cost(over, route.request)
        return kept, BudgetExceededError(
            f"{over.name} could cost up to ${worst:.6f}; budget ${budget.limit_usd:.6f}, "
            f"spent ${budget.spent_usd:.6f}", provider=over.info.provider)

    async def _admit(self, pool: list[Deployment], need: int, deadline: float, route: Route) -> Deployment:
        """The first deployment of ``pool`` with room for the call, waiting for one until ``deadline``."""
        now = self.clock()
        by_gate = {id(d.gate): d for d in pool}
        gates = [d.gate for d in pool]
        free = [g.ready_at(need, now) for g in gates]
        if all(at is not None and at > deadline for at in free):
            # Nothing can start before the deadline, whoever finishes: say when, rather than wait.
            ready_in = min(at for at in free if at is not None) - now
            if all(g.paused_until > deadline for g in gates):
                raise CoolingDownError(
                    f"all {len(pool)} eligible deployments are cooling down after failures; "
                    f"the first is ready again in {ready_in:.1f}s", provider="router", retry_after=ready_in)
            raise self._queue_error(pool, retry_after=ready_in)
        try:
            gate = await self._admission.acquire(gates, need, deadline)
        except QueueTimeout:
            raise self._queue_error(pool, retry_after=None) from None
        return by_gate[id(gate)]

    def _shared_buckets(self, d: Deployment) -> list[tuple[str, float]]:
        """The shared buckets of ``d``'s rpm and tpm, with their per-minute rates."""
        if self.shared is None:
            return []
        rates = (("rpm", d.limits.rpm), ("tpm", d.limits.tpm))
        return [(f"{d.name}:{kind}", per_minute) for kind, per_minute in rates if per_minute is not None]

    async def _take_shared(self, d: Deployment, need: int, deadline: float) -> None:
        """After this process's limits, the rates ``d`` shares with other processes, when configured."""
        for bucket, per_minute in self._shared_buckets(d):
            amount = need if bucket.endswith(":tpm") else 1
            burst = max(1.0, per_minute / 60 * self.config.tuning.burst_s)
            while True:
                assert self.shared is not None  # noqa: S101 - _shared_buckets is empty without it
                try:
                    wait = await self.shared.take(bucket, amount, per_minute, burst)
                except AiosError as exc:
                    # The shared store is down: keep to this process's limits rather than stop calling.
                    log.warning("shared LLM rate %s unavailable, per-process limits only: %s", bucket, exc)
                    return
                if wait <= 0:
                    break
                if self.clock() + wait > deadline:
                    raise self._queue_error([d], retry_after=wait)
                await self.sleep(wait)

    async def _give_back_shared(self, d: Deployment, unused: int) -> None:
        for bucket, per_minute in self._shared_buckets(d):
            if bucket.endswith(":tpm") and unused > 0 and self.shared is not None:
                try:
                    await self.shared.give_back(bucket, unused, per_minute,
                                                max(1.0, per_minute / 60 * self.config.tuning.burst_s))
                except AiosError as exc:
                    log.warning("shared LLM rate %s unavailable: %s", bucket, exc)

    def _queue_error(self, pool: list[Deployment], retry_after: float | None) -> QueueTimeoutError:
        load = ", ".join(f"{d.name}: {d.in_flight} in flight, {d.waiting} waiting" for d in pool)
        return QueueTimeoutError(
            f"no deployment had room within {self.config.max_queue_s:g}s ({load}): raise their limits "
            "(max_concurrent, rpm, tpm in AIOS_LLM_CONFIG) or AIOS_LLM_MAX_QUEUE_S, or add deployments",
            provider="router", retry_after=retry_after)

    @staticmethod
    def _retryable(exc: LLMError) -> bool:
        return isinstance(exc, TRANSIENT_ERRORS) and not isinstance(exc, _ROUTER_ERRORS)

    def _backoff(self, retries: int) -> float:
        """Seconds to wait before retry number ``retries + 1`` of a failure other than a 429."""
        base = self.config.retry_base_s * 2.0 ** retries
        jitter: float = 0.5 + self.rng.random() / 2  # spread the retries of many calls that failed together
        return min(self.config.retry_max_s, base * jitter)

    def _on_success(self, d: Deployment, response: ChatResponse, route: Route) -> None:
        if response.ttft_ms is not None:
            a = self.config.ewma_alpha
            d.ttft_ewma_ms = response.ttft_ms if d.ttft_ewma_ms is None else a * response.ttft_ms + (1 - a) * d.ttft_ewma_ms
        if route.sticky_key:
            self._sticky[route.sticky_key] = d.name

    def _on_failure(self, d: Deployment, exc: LLMError) -> None:
        if isinstance(exc, (BadRequestError, ProviderAuthError)):
            return  # the request or the key, not the deployment's health: do not cool it down
        now = self.clock()
        if isinstance(exc, RateLimitError):
            # The provider said how busy it is: every call waits out its retry-after, and the
            # deployment's request rate shrinks until it recovers, even when it is the only one.
            wait = exc.retry_after if exc.retry_after is not None else self.config.base_cooldown_s
            d.gate.rate_limited(min(wait, self.config.max_cooldown_s), now)
        elif len(self.deployments) < 2:
            # Nothing to fall back to: a cooldown would only hold back the router's own paced
            # retries (and the orchestrator's) without calling.
            return
        else:
            d.gate.pause(min(self.config.base_cooldown_s, self.config.max_cooldown_s), now)
        self._admission.changed()
        if self.observer is not None:
            self.observer.cooldown(d.name, type(exc).__name__)
        for key, name in list(self._sticky.items()):
            if name == d.name:
                del self._sticky[key]  # an unhealthy deployment loses its sticky projects


def _masked(request: ChatRequest, masking: Redaction | None, detector: PiiDetector) -> ChatRequest:
    if masking is None:
        return request
    return replace(request, messages=tuple(replace(m, content=masking.mask(m.content, detector))
                                          for m in request.messages))
