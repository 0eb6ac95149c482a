"""What the Redis context connectors share: one way to read Redis replies and to reach the server."""

from __future__ import annotations

import redis.asyncio as aioredis


def text(value: bytes | str) -> str:
    """A Redis reply as text (clients may or may not decode responses)."""
    return value.decode() if isinstance(value, bytes) else value


MAX_CONNECTIONS = 64  # Redis answers in well under a millisecond: 64 serve hundreds of tasks in flight
WAIT_FOR_CONNECTION_S = 20.0


def connect(url: str) -> aioredis.Redis:
    """An asyncio client for ``url`` (redis://host:port/db) whose callers wait for a free connection.

    redis-py's default pool refuses a command outright ("Too many connections") once 100 are open,
    which hundreds of agent tasks in flight reach at once; this one queues them instead.
    """
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=MAX_CONNECTIONS,
                                                    timeout=WAIT_FOR_CONNECTION_S)
    return aioredis.Redis(connection_pool=pool)
