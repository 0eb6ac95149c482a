"""Per-principal rate limits: a token bucket in Redis, shared by every API replica."""

from __future__ import annotations

import math

import redis.asyncio as aioredis

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

    async def check(self, principal: Principal) -> None:
        key = f"{self.prefix}:ratelimit:{principal.via}:{principal.subject}"
        allowed, wait_ms = await self._script(keys=[key], args=[self.rate, self.burst])
        if not int(allowed):
            retry = max(1, math.ceil(int(wait_ms) / 1000))
            raise RateLimited(f"rate limit of {self.rate:g}/s (burst {self.burst}) exceeded; retry in {retry}s",
                              headers={"Retry-After": str(retry)})
