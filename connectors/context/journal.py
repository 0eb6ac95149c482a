"""LLM answers recorded in Redis by (task, attempt, step), so a replay never pays for a call twice.

An agent writes each answer here before it produces any event that depends on it. When the same
assignment is delivered again (a crash before the offset commit, a rebalance), the agent reads
the answer back instead of calling the LLM. Records expire after a TTL: long enough to outlive
any redelivery, short enough that the journal stays a cache of recent work.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from aios.connectors.context.base import connect
from aios.connectors.errors import StoreUnavailableError


def journal_key(prefix: str, task_id: str, attempt: int, step: int) -> str:
    return f"{prefix}:llm:{task_id}:{attempt}:{step}"


class LlmJournal:
    """``get``/``put`` of one JSON record per (task, attempt, step), with a TTL."""

    def __init__(self, client: aioredis.Redis, *, prefix: str, ttl_s: int) -> None:
        if ttl_s < 1:
            raise ValueError(f"the journal TTL must be at least 1 second, not {ttl_s}")
        self._redis = client
        self.prefix = prefix
        self.ttl_s = ttl_s

    @classmethod
    def from_url(cls, url: str, *, prefix: str, ttl_s: int) -> LlmJournal:
        return cls(connect(url), prefix=prefix, ttl_s=ttl_s)

    async def get(self, task_id: str, attempt: int, step: int) -> Mapping[str, Any] | None:
        """The recorded answer, or None when this call was never answered (or expired)."""
        key = journal_key(self.prefix, task_id, attempt, step)
        try:
            raw = await self._redis.get(key)
        except RedisError as exc:
            raise StoreUnavailableError(f"Redis read of the LLM journal {key} failed: {exc}") from exc
        if raw is None:
            return None
        value = json.loads(raw)
        if not isinstance(value, dict):
            raise StoreUnavailableError(f"the LLM journal entry {key} is not a JSON object")
        return value

    async def put(self, task_id: str, attempt: int, step: int, record: Mapping[str, Any]) -> None:
        """Record an answer. The first record wins: a concurrent duplicate never overwrites it."""
        key = journal_key(self.prefix, task_id, attempt, step)
        try:
            await self._redis.set(key, json.dumps(record, separators=(",", ":")), ex=self.ttl_s, nx=True)
        except RedisError as exc:
            raise StoreUnavailableError(f"Redis write of the LLM journal {key} failed: {exc}") from exc

    async def aclose(self) -> None:
        await self._redis.aclose()
