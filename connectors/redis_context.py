"""Rolling context windows in Redis: one list per (scope, id), bounded, with a TTL.

Appends are idempotent by memory id, so replaying ``aios.memory`` never duplicates a turn.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from connectors.errors import StoreUnavailableError

# One round trip: mark the memory id as applied (NX) and only then append, trim and extend TTL.
_APPEND = """
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[3]) then
  redis.call('RPUSH', KEYS[1], ARGV[1])
  redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  return 1
end
return 0
"""


def context_key(prefix: str, scope: str, scope_id: str) -> str:
    return f"{prefix}:ctx:{scope}:{scope_id}"


class RedisContext:
    """Async access to rolling context windows."""

    def __init__(self, client: aioredis.Redis, *, prefix: str, window: int, ttl_s: int) -> None:
        self._redis = client
        self.prefix = prefix
        self.window = window
        self.ttl_s = ttl_s
        self._append: Any = client.register_script(_APPEND)

    @classmethod
    def from_url(cls, url: str, *, prefix: str, window: int, ttl_s: int) -> RedisContext:
        return cls(aioredis.Redis.from_url(url), prefix=prefix, window=window, ttl_s=ttl_s)

    def key(self, scope: str, scope_id: str) -> str:
        return context_key(self.prefix, scope, scope_id)

    async def append(self, scope: str, scope_id: str, memory_id: str, turn: str) -> bool:
        """Append ``turn`` once per ``memory_id``; False when it was already applied."""
        seen = f"{self.prefix}:mem-applied:{memory_id}"
        try:
            applied = await self._append(keys=[self.key(scope, scope_id), seen], args=[turn, self.window, self.ttl_s])
        except RedisError as exc:
            raise StoreUnavailableError(f"Redis append to {self.key(scope, scope_id)} failed: {exc}") from exc
        return bool(applied)

    async def append_many(self, turns: list[tuple[str, str, str, str]]) -> list[bool]:
        """Apply (scope, scope_id, memory_id, turn) items in one pipelined round trip, in order."""
        if not turns:
            return []
        try:
            pipe = self._redis.pipeline(transaction=False)
            for scope, scope_id, memory_id, turn in turns:
                await self._append(keys=[self.key(scope, scope_id), f"{self.prefix}:mem-applied:{memory_id}"],
                                   args=[turn, self.window, self.ttl_s], client=pipe)
            results = await pipe.execute()
        except RedisError as exc:
            raise StoreUnavailableError(f"Redis pipelined append of {len(turns)} turns failed: {exc}") from exc
        return [bool(r) for r in results]

    async def recent(self, scope: str, scope_id: str, limit: int | None = None) -> list[str]:
        """The newest ``limit`` turns, oldest first."""
        n = limit or self.window
        try:
            raw = await self._redis.lrange(self.key(scope, scope_id), -n, -1)
        except RedisError as exc:
            raise StoreUnavailableError(f"Redis read of {self.key(scope, scope_id)} failed: {exc}") from exc
        return [item.decode() if isinstance(item, bytes) else str(item) for item in raw]

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except RedisError as exc:
            raise StoreUnavailableError(f"Redis is not reachable: {exc}") from exc

    async def aclose(self) -> None:
        await self._redis.aclose()
