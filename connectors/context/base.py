"""What the Redis context connectors share: one way to read Redis replies and to reach the server."""

from __future__ import annotations

import redis.asyncio as aioredis


def text(value: bytes | str) -> str:
    """A Redis reply as text (clients may or may not decode responses)."""
    return value.decode() if isinstance(value, bytes) else value


def connect(url: str) -> aioredis.Redis:
    """An asyncio client for ``url`` (redis://host:port/db)."""
    return aioredis.Redis.from_url(url)
