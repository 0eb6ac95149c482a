"""The LLM router: picks a deployment per call, falls back, cools down, and keeps to budgets.

Every decision is made here, in one place: which deployments may see the prompt (privacy, tier,
context window, cooldowns), their order (the strategy, and stickiness per project or session),
and what happens on failure: a transient failure (408, 409, 429, 5xx, 529, timeouts, a dropped
connection) falls back to the next eligible deployment at once, and when none is left the router
retries, up to ``RouterConfig.max_retries`` times, after a backoff that honours the provider's
retry-after. The vendor SDKs run with their own retries off (``max_retries=0``), so a call is
never retried in two places.
"""

from __future__ import annotations

import asyncio
import enum
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
    RateLimitError,
)
from aios.agents.llm.base import ChatRequest, ChatResponse, OnDelta, Provider, Usage
from aios.agents.llm.catalogue import TIERS, ModelInfo, Tier, cost_usd, load_catalogue
from aios.agents.llm.privacy import PiiDetector, Redaction


class Strategy(enum.StrEnum):
    COST = "cost"  # cheapest deployment that meets the tier and the context size
    LATENCY = "latency"  # lowest EWMA of time-to-first-token
    LEAST_BUSY = "least-busy"  # fewest calls in flight
    WEIGHTED = "weighted"  # random, proportional to weights


@dataclass
class Deployment:
    """A model behind a provider client, with its catalogue entry and live health."""

    name: str
    provider: Provider
    info: ModelInfo
    weight: float = 1.0
    ttft_ewma_ms: float | None = None
    in_flight: int = 0
    cooldown_until: float = 0.0

    @property
    def local(self) -> bool:
        return self.info.local


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
    retry_max_s: float = 20.0  # a retry-after longer than this is not waited for: the call fails


class RouterObserver(Protocol):
    """Told of every decision and cooldown (``streams`` counts them in Prometheus)."""

    def decision(self, strategy: str, deployment: str) -> None: ...

    def cooldown(self, deployment: str, reason: str) -> None: ...


_COOLDOWN_ERRORS = (RateLimitError,)
# Failures of the provider's moment, not of the request: worth another try after a pause.
TRANSIENT_ERRORS = (RateLimitError, OverloadedError, ProviderTimeoutError, ProviderUnavailableError)
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
    _sticky: dict[str, str] = field(default_factory=dict)

    @classmethod
    def single(cls, provider: Provider, **kwargs: object) -> Router:
        """A router over one provider: the same decisions path, one deployment to choose."""
        info = load_catalogue().get(provider.name, provider.model)  # unknown models are an error
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
        need = self.estimate_tokens(route.request) + route.request.max_tokens
        fits = [d for d in pool if d.info.context_window >= need]
        if not fits:
            raise NoDeploymentError(
                f"no deployment of tier {route.tier}+ has a context window of {need} tokens", provider="router"
            )
        healthy = [d for d in fits if d.cooldown_until <= now]
        cooling = sorted((d for d in fits if d.cooldown_until > now), key=lambda d: d.cooldown_until)
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
            return sorted(pool, key=lambda d: (d.in_flight, d.name))
        remaining, out = list(pool), []
        while remaining:
            pick = self.rng.choices(remaining, weights=[max(d.weight, 0.0) + 1e-9 for d in remaining])[0]
            remaining.remove(pick)
            out.append(pick)
        return out

    def estimate_tokens(self, request: ChatRequest) -> int:
        chars = sum(len(m.content) for m in request.messages)
        return int(chars / self.config.chars_per_token) + 4 * len(request.messages)

    def worst_case_cost(self, d: Deployment, request: ChatRequest) -> float:
        return cost_usd(d.info, Usage(input_tokens=self.estimate_tokens(request), output_tokens=request.max_tokens))

    async def complete(self, route: Route, *, on_delta: OnDelta | None = None) -> Routed:
        """Call the first deployment that answers; raise the last error when none does.

        ``on_delta`` is told the answer's text as it streams (passed to the provider).

        Eligible deployments are tried in order, each once; a transient failure of the last one
        left is retried after a backoff, up to ``config.max_retries`` times.
        """
        candidates, redact = self.candidates(route)
        now = self.clock()
        healthy = [d for d in candidates if d.cooldown_until <= now]
        if not healthy:
            ready_in = min(d.cooldown_until for d in candidates) - now
            raise CoolingDownError(
                f"all {len(candidates)} eligible deployments are cooling down after failures; "
                f"the first is ready again in {ready_in:.1f}s", provider="router", retry_after=ready_in)
        chain: list[str] = []
        last: LLMError | None = None
        queue = list(healthy)
        retries = 0
        while queue:
            d = queue.pop(0)
            if route.budget is not None and not route.budget.allows(self.worst_case_cost(d, route.request)):
                last = BudgetExceededError(
                    f"{d.name} could cost up to ${self.worst_case_cost(d, route.request):.6f}; "
                    f"budget ${route.budget.limit_usd:.6f}, spent ${route.budget.spent_usd:.6f}",
                    provider=d.info.provider,
                )
                continue
            chain.append(d.name)
            if self.observer is not None:
                self.observer.decision(route.strategy.value, d.name)
            masking = Redaction() if redact and not d.local else None
            request = _masked(route.request, masking, self.detector)
            d.in_flight += 1
            try:
                response = await d.provider.complete(request, on_delta=on_delta)
            except LLMError as exc:
                last = exc
                self._on_failure(d, exc)
                if isinstance(exc, BadRequestError) and not isinstance(exc, ContextTooLongError):
                    raise  # our request is wrong: another deployment will not fix it
                if not queue and retries < self.config.max_retries and self._retryable(exc):
                    wait = self._backoff(exc, retries)
                    if wait is not None:
                        retries += 1
                        await self.sleep(wait)
                        queue.append(d)
                continue
            finally:
                d.in_flight -= 1
            self._on_success(d, response, route)
            if masking is not None:
                response = replace(response, text=masking.restore(response.text))
            cost = cost_usd(d.info, response.usage)
            if route.budget is not None:
                route.budget.spent_usd += cost
            return Routed(response, d.name, route.strategy, cost, tuple(chain), masking is not None)
        if last is None:
            raise NoDeploymentError("no deployment is available", provider="router")
        raise last

    @staticmethod
    def _retryable(exc: LLMError) -> bool:
        return isinstance(exc, TRANSIENT_ERRORS) and not isinstance(exc, CoolingDownError)

    def _backoff(self, exc: LLMError, retries: int) -> float | None:
        """Seconds to wait before retry number ``retries + 1``; None when the provider asks for
        longer than ``retry_max_s`` (the caller's own retry policy is the better place to wait)."""
        hint = exc.retry_after if isinstance(exc, RateLimitError) else None
        if hint is not None:
            return hint if hint <= self.config.retry_max_s else None
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
        if len(self.deployments) < 2:
            # Nothing to fall back to: a cooldown would only fail the caller's own paced retries
            # (the SDK's, the orchestrator's backoff) without calling.
            return
        wait = self.config.base_cooldown_s
        if isinstance(exc, _COOLDOWN_ERRORS) and exc.retry_after:
            wait = max(wait, exc.retry_after)
        d.cooldown_until = self.clock() + min(wait, self.config.max_cooldown_s)
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
