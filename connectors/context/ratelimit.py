"""Token buckets in Redis, shared by every replica that names the same bucket."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from aios.connectors.context.base import connect
from aios.connectors.errors import StoreUnavailableError

# Refill by elapsed time, then take one token if there is one. Returns {allowed, ms until a token}.
# The server's clock (TIME) is used so that replicas with skewed clocks agree.
_BUCKET = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + (now - ts) * rate / 1000)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return {allowed, wait}
"""


class TokenBuckets:
    """``rate`` tokens per second per bucket, up to ``burst``; buckets live under ``<prefix>:ratelimit:``."""

    def __init__(self, redis: aioredis.Redis, prefix: str, rate_per_s: float, burst: int) -> None:
        self.prefix = prefix
        self.rate = rate_per_s
        self.burst = burst
        self._script = redis.register_script(_BUCKET)

    async def take(self, bucket: str) -> int:
        """Take a token from ``bucket``: 0 when one was taken, else the milliseconds until one is due."""
        allowed, wait_ms = await self._script(keys=[f"{self.prefix}:ratelimit:{bucket}"], args=[self.rate, self.burst])
        return 0 if int(allowed) else max(1, int(wait_ms))


# Like _BUCKET, for amounts and rates given per call: a take larger than the bucket is allowed from
# a full bucket and leaves it in debt (so any amount a minute's rate covers gets through); a
# negative amount gives tokens back. Returns {taken, ms until it could be}.
_SHARED = """
local rate, burst, amount = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
local taken = 1
local wait = 0
if amount < 0 then
  tokens = math.min(burst, tokens - amount)
elseif tokens >= math.min(amount, burst) then
  tokens = tokens - amount
else
  taken = 0
  wait = math.ceil((math.min(amount, burst) - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - math.min(tokens, 0)) * 1000 / rate) + 1000)
return {taken, wait}
"""


class SharedRates:
    """Per-minute rates that every process naming the same bucket shares (several agent workers on
    one provider key), under ``<prefix>:llm-rate:``. The LLM router takes from them (its
    ``SharedRates`` protocol) after its own, per-process, limits let a call through."""

    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.prefix = prefix
        self.redis = redis
        self._script = redis.register_script(_SHARED)

    @classmethod
    def from_url(cls, url: str, *, prefix: str) -> SharedRates:
        return cls(connect(url), prefix)

    async def aclose(self) -> None:
        await self.redis.aclose()

    async def take(self, bucket: str, amount: float, per_minute: float, burst: float) -> float:
        """Take ``amount`` from ``bucket``: 0.0 when taken, else the seconds until it could be (nothing taken)."""
        return await self._run(bucket, amount, per_minute, burst)

    async def give_back(self, bucket: str, amount: float, per_minute: float, burst: float) -> None:
        """Return ``amount`` to ``bucket`` (a call used less than it reserved)."""
        if amount > 0:
            await self._run(bucket, -amount, per_minute, burst)

    async def _run(self, bucket: str, amount: float, per_minute: float, burst: float) -> float:
        try:
            taken, wait_ms = await self._script(keys=[f"{self.prefix}:llm-rate:{bucket}"],
                                                args=[per_minute / 60, burst, amount])
        except RedisError as exc:
            raise StoreUnavailableError(f"shared LLM rate {bucket!r}: Redis did not answer: {exc}") from exc
        return 0.0 if int(taken) else max(1, int(wait_ms)) / 1000
