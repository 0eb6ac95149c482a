"""Token buckets in Redis, shared by every replica that names the same bucket."""

from __future__ import annotations

import redis.asyncio as aioredis

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
