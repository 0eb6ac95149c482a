"""MCP tool definitions cached in Redis per server version, shared by every worker of a prefix.

The first worker to list a server version's tools stores them; every later worker (and every
replay) of that version reads the same list, so the tools a model is offered do not drift while the
server's version stays the same.
"""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from aios.connectors.context.base import connect
from aios.connectors.errors import StoreUnavailableError

MAX_DEFINITIONS_BYTES = 4_000_000  # a server's whole tool list; a larger one is listed anew, not cached


def definitions_cache_key(prefix: str, key: str) -> str:
    return f"{prefix}:mcp-tools:{key}"


class ToolDefinitionsCache:
    """``get``/``put`` of one JSON list of tool definitions per key, with a TTL."""

    def __init__(self, client: aioredis.Redis, *, prefix: str, ttl_s: int) -> None:
        if ttl_s < 1:
            raise ValueError(f"the definitions TTL must be at least 1 second, not {ttl_s}")
        self._redis = client
        self.prefix = prefix
        self.ttl_s = ttl_s

    @classmethod
    def from_url(cls, url: str, *, prefix: str, ttl_s: int) -> ToolDefinitionsCache:
        return cls(connect(url), prefix=prefix, ttl_s=ttl_s)

    async def get(self, key: str) -> list[dict[str, Any]] | None:
        """The cached definitions, or None (never stored, expired, or unreadable)."""
        full = definitions_cache_key(self.prefix, key)
        try:
            raw = await self._redis.get(full)
        except RedisError as exc:
            raise StoreUnavailableError(f"Redis read of the MCP tool definitions {full} failed: {exc}") from exc
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            return None  # not ours to trust: the caller lists the server again
        if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
            return None
        return value

    async def put(self, key: str, tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Store ``tools`` unless another worker stored this key first; return what the key holds."""
        full = definitions_cache_key(self.prefix, key)
        raw = json.dumps(tools, separators=(",", ":"))
        if len(raw) > MAX_DEFINITIONS_BYTES:
            return tools
        try:
            stored = await self._redis.set(full, raw, ex=self.ttl_s, nx=True)
        except RedisError as exc:
            raise StoreUnavailableError(f"Redis write of the MCP tool definitions {full} failed: {exc}") from exc
        if stored:
            return tools
        return await self.get(key) or tools

    async def aclose(self) -> None:
        await self._redis.aclose()
