"""Per-principal rate limits: a token bucket in Redis per key or token subject, shared by every
API replica. Charged only once the caller is authenticated, so unauthenticated noise cannot drain
a real key's bucket."""

from __future__ import annotations

import math

from aios.api.errors import RateLimited
from aios.api.principal import Principal
from aios.connectors.context.ratelimit import TokenBuckets


class RateLimiter:
    def __init__(self, buckets: TokenBuckets) -> None:
        self.buckets = buckets

    async def check(self, principal: Principal) -> None:
        """Take one token from the principal's bucket, or raise RateLimited with the wait."""
        wait_ms = await self.buckets.take(f"{principal.via}:{principal.subject}")
        if wait_ms:
            retry = max(1, math.ceil(wait_ms / 1000))
            b = self.buckets
            raise RateLimited(f"rate limit of {b.rate:g}/s (burst {b.burst}) exceeded; retry in {retry}s",
                              headers={"Retry-After": str(retry)})
