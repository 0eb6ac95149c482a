"""The ledger of dead-letter replays, in Redis: how often each record was sent back, and a log of
every replay.

A record is known by a fingerprint of its key and bytes, not by its dead letter's id: a replayed
record that fails again comes back as a new dead letter with a new id but the same bytes, so a
count per letter would let a loop of replay-fail-replay run forever. The count is claimed
atomically (a Lua script) before the record is sent, so two operators replaying at once cannot
both slip under the limit; a send that fails gives its claim back.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from aios.connectors.errors import StoreUnavailableError

LOG_ENTRIES = 10_000  # the replay log keeps the latest replays; the counts are kept whole

# KEYS[1] the record's count; ARGV[1] the limit. Returns the new count, or -(count) when at the limit.
_CLAIM = """
local n = tonumber(redis.call('HGET', KEYS[1], 'count') or '0')
if n >= tonumber(ARGV[1]) then return -n end
return redis.call('HINCRBY', KEYS[1], 'count', 1)
"""


def fingerprint(key: bytes | None, payload: bytes) -> str:
    """The identity of a record's content: its key and bytes (length-prefixed, so no two pairs collide)."""
    k = key or b""
    return hashlib.sha256(len(k).to_bytes(8, "big") + k + payload).hexdigest()[:32]


@dataclass(frozen=True)
class ReplayRecord:
    replay_id: str
    dead_letter_id: str
    fingerprint: str
    count: int  # this record's replays, this one included
    topic: str
    partition: int
    offset: int
    at_ms: int
    by: str


class ReplayLedger:
    """Counts per record fingerprint and the replay log, under ``<prefix>:dlq-replay:``."""

    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self._claim = redis.register_script(_CLAIM)

    def _count_key(self, fp: str) -> str:
        return f"{self.prefix}:dlq-replay:{fp}"

    @property
    def _log_key(self) -> str:
        return f"{self.prefix}:dlq-replay-log"

    async def counts(self, fps: list[str]) -> dict[str, int]:
        """How often each fingerprint was replayed (0: never)."""
        if not fps:
            return {}
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for fp in fps:
                    pipe.hget(self._count_key(fp), "count")
                values = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"the replay ledger in Redis did not answer: {exc}") from exc
        return {fp: int(v or 0) for fp, v in zip(fps, values, strict=True)}

    async def claim(self, fp: str, limit: int) -> int:
        """Count one more replay of ``fp``: the new count, or ``-count`` when it is at ``limit``."""
        try:
            return int(await self._claim(keys=[self._count_key(fp)], args=[limit]))
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"the replay ledger in Redis did not answer: {exc}") from exc

    async def release(self, fp: str) -> None:
        """Give back a claim whose send failed."""
        try:
            await self.redis.hincrby(self._count_key(fp), "count", -1)
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"the replay ledger in Redis did not answer: {exc}") from exc

    async def record(self, entry: ReplayRecord) -> None:
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.lpush(self._log_key, json.dumps(asdict(entry)))
                pipe.ltrim(self._log_key, 0, LOG_ENTRIES - 1)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"the replay ledger in Redis did not answer: {exc}") from exc

    async def log(self, limit: int = 100) -> list[ReplayRecord]:
        """The latest replays, newest first."""
        try:
            raw = await self.redis.lrange(self._log_key, 0, max(0, limit - 1))
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"the replay ledger in Redis did not answer: {exc}") from exc
        return [ReplayRecord(**json.loads(r)) for r in raw]
