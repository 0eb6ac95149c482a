"""Per-principal rate limits: a token bucket in Redis, shared by every API replica."""

from __future__ import annotations

import math
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from api.errors import RateLimited
from api.principal import Principal

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


class RateLimiter:
    def __init__(self, redis: aioredis.Redis, prefix: str, rate_per_s: float, burst: int) -> None:
        self.redis = redis
        self.prefix = prefix
        self.rate = rate_per_s
        self.burst = burst
        self._script = redis.register_script(_BUCKET)

    def _key(self, via: str, subject: str) -> str:
        return f"{self.prefix}:ratelimit:{via}:{subject}"

    async def check(self, principal: Principal) -> None:
        """Take one token from the principal's bucket, or raise RateLimited with the wait."""
        self.verdict(await self._script(keys=[self._key(principal.via, principal.subject)],
                                        args=[self.rate, self.burst]))

    async def charge(self, pipe: Pipeline, via: str, subject: str) -> None:
        """Queue the bucket charge on ``pipe`` (no I/O yet); pass its reply to :meth:`verdict`."""
        await self._script(keys=[self._key(via, subject)], args=[self.rate, self.burst], client=pipe)

    def verdict(self, reply: Any) -> None:
        allowed, wait_ms = reply
        if not int(allowed):
            retry = max(1, math.ceil(int(wait_ms) / 1000))
            raise RateLimited(f"rate limit of {self.rate:g}/s (burst {self.burst}) exceeded; retry in {retry}s",
                              headers={"Retry-After": str(retry)})
