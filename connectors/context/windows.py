"""Rolling context windows in Redis: per (scope, id) a list of turns bounded by count and tokens,
a running summary of the turns folded out of it, and a TTL per scope.

Appends are idempotent by memory id, so replaying ``aios.memory`` never duplicates a turn. Turns
pushed out of a window wait in a fold list until a summary that covers them is stored.

Restricted content has windows of its own: the *restricted lane* of a scope (``project~restricted``),
beside the normal one under the same id. Only restricted tasks read it, so turns that must stay
on local models never reach a prompt, or a summary, that a remote model sees.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from aios.connectors.context.base import connect
from aios.connectors.errors import StoreUnavailableError

SCOPES = ("session", "project", "agent", "task")
# '~' never appears in a scope name, so a lane's keys cannot meet a normal window's, whatever the id.
RESTRICTED_LANE = "~restricted"


def lane(scope: str, restricted: bool) -> str:
    """The scope whose windows hold ``scope``'s restricted turns (``scope`` itself when not restricted)."""
    return f"{scope}{RESTRICTED_LANE}" if restricted else scope


def base_scope(scope: str) -> str:
    """The scope of a lane (``project`` for ``project~restricted``)."""
    return scope.removesuffix(RESTRICTED_LANE)


def is_restricted_lane(scope: str) -> bool:
    return scope.endswith(RESTRICTED_LANE)

# Appends a run of turns to one window, in order, in one script call (one call per window per
# batch: the per-call packing in redis-py cost more than the appends). For each turn: mark its
# memory id as applied (NX), and only then append and, when the window is over its count or token
# bound, evict the oldest turns into the fold list until it is back under the lower trim bounds.
# Trimming below the bound makes folds (and LLM summary calls) come in chunks rather than on every
# turn of a full window. The newest turn always stays, even when it alone is over the token bound.
# KEYS: turns, tokens, fold, summary, then one applied-marker per turn.
# ARGV: turn bound, token bound, ttl, low turns, low tokens, then (value, tokens) per turn.
# Returns (applied, evicted) per turn, flattened.
_APPEND = """
local bound_n, bound_t, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local low_n, low_t = tonumber(ARGV[4]), tonumber(ARGV[5])
local out = {}
local any = false
for i = 5, #KEYS do
  local value, tokens = ARGV[2 * i - 4], ARGV[2 * i - 3]
  local evicted = 0
  if redis.call('SET', KEYS[i], '1', 'NX', 'EX', ttl) then
    any = true
    redis.call('RPUSH', KEYS[1], value)
    local total = redis.call('INCRBY', KEYS[2], tokens)
    local n = redis.call('LLEN', KEYS[1])
    if n > bound_n or total > bound_t then
      while n > 1 and (n > low_n or total > low_t) do
        local old = redis.call('LPOP', KEYS[1])
        total = redis.call('DECRBY', KEYS[2], tonumber(cjson.decode(old)['tokens']) or 0)
        redis.call('RPUSH', KEYS[3], old)
        n = n - 1
        evicted = evicted + 1
      end
    end
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
  out[#out + 1] = evicted
end
if any then
  for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ttl) end
end
return out
"""

# A summary replaces the folded turns it covers; an older or equal sequence number is a replay.
_SUMMARY = """
local current = redis.call('GET', KEYS[1])
if current and tonumber(cjson.decode(current)['seq']) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
redis.call('DEL', KEYS[2])
return 1
"""


def context_key(prefix: str, scope: str, scope_id: str) -> str:
    return f"{prefix}:ctx:{scope}:{scope_id}"


def window_keys(prefix: str, scope: str, scope_id: str) -> dict[str, str]:
    """Every key of one window: turns, their token total, turns waiting to be folded, the summary."""
    return {
        "turns": context_key(prefix, scope, scope_id),
        "tokens": f"{prefix}:ctx-tokens:{scope}:{scope_id}",
        "fold": f"{prefix}:fold:{scope}:{scope_id}",
        "summary": f"{prefix}:summary:{scope}:{scope_id}",
    }


@dataclass(frozen=True, slots=True)
class ScopePolicy:
    """How much a window of one scope keeps, and for how long after its last write."""

    turns: int
    tokens: int
    ttl_s: int
    trim_to: float = 1.0  # a window over a bound is trimmed to this fraction of both bounds

    def low(self) -> tuple[int, int]:
        """The turns and tokens a window over its bounds is trimmed down to."""
        return max(1, int(self.turns * self.trim_to)), max(1, int(self.tokens * self.trim_to))


@dataclass(frozen=True, slots=True)
class Turn:
    """One memory write to apply: a turn (appended) or a summary (replacing folded turns)."""

    scope: str
    scope_id: str
    memory_id: str
    kind: str  # turn | fact | summary
    data: Mapping[str, Any]  # stored as JSON; must carry "tokens" (and "seq" for a summary)


@dataclass(frozen=True, slots=True)
class Applied:
    """What applying one Turn did: False for a replay; how many old turns it pushed out."""

    applied: bool
    evicted: int = 0


@dataclass(frozen=True, slots=True)
class Context:
    """A window as a prompt reads it: the running summary (or None) and the turns, oldest first."""

    summary: dict[str, Any] | None
    turns: list[dict[str, Any]] = field(default_factory=list)
    tokens: int = 0


def _json(data: Mapping[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"))


def _text(item: Any) -> str:
    return item.decode() if isinstance(item, bytes) else str(item)


class RedisContext:
    """Async access to rolling context windows."""

    def __init__(self, client: aioredis.Redis, *, prefix: str, default: ScopePolicy,
                 policies: Mapping[str, ScopePolicy] | None = None) -> None:
        self._redis = client
        self.prefix = prefix
        self.default = default
        self.policies = dict(policies or {})
        self._append: Any = client.register_script(_APPEND)
        self._summary: Any = client.register_script(_SUMMARY)

    @classmethod
    def from_url(cls, url: str, *, prefix: str, default: ScopePolicy,
                 policies: Mapping[str, ScopePolicy] | None = None) -> RedisContext:
        return cls(connect(url), prefix=prefix, default=default, policies=policies)

    @property
    def redis(self) -> aioredis.Redis:
        return self._redis

    def with_prefix(self, prefix: str) -> RedisContext:
        """The same windows under another key prefix, on the same connection (for rebuilds)."""
        return RedisContext(self._redis, prefix=prefix, default=self.default, policies=self.policies)

    def policy(self, scope: str) -> ScopePolicy:
        return self.policies.get(base_scope(scope), self.default)

    def key(self, scope: str, scope_id: str) -> str:
        return context_key(self.prefix, scope, scope_id)

    async def append(self, scope: str, scope_id: str, memory_id: str, turn: Mapping[str, Any]) -> bool:
        """Append one turn once per ``memory_id``; False when it was already applied."""
        return (await self.apply_many([Turn(scope, scope_id, memory_id, "turn", turn)]))[0].applied

    async def apply_many(self, items: Sequence[Turn]) -> list[Applied]:
        """Apply turns and summaries in one pipelined round trip; each window's writes in order.

        The turns of one window go in one script call; a summary of a window first sends the turns
        queued before it, so it covers exactly what the log had folded when it was written.
        """
        if not items:
            return []
        calls: list[list[int]] = []  # the item indices each pipelined call answers for
        try:
            pipe = self._redis.pipeline(transaction=False)
            runs: dict[tuple[str, str], list[int]] = {}
            for i, item in enumerate(items):
                window = (item.scope, item.scope_id)
                if item.kind != "summary":
                    runs.setdefault(window, []).append(i)
                    continue
                if window in runs:
                    calls.append(await self._queue_run(pipe, items, runs.pop(window)))
                policy = self.policy(item.scope)
                keys = window_keys(self.prefix, item.scope, item.scope_id)
                await self._summary(keys=[keys["summary"], keys["fold"]],
                                    args=[_json(item.data), int(item.data["seq"]), policy.ttl_s], client=pipe)
                calls.append([i])
            for run in runs.values():
                calls.append(await self._queue_run(pipe, items, run))
            results = await pipe.execute()
        except RedisError as exc:
            raise StoreUnavailableError(f"Redis pipelined apply of {len(items)} memory writes failed: {exc}") from exc
        applied = [Applied(False)] * len(items)
        for indices, result in zip(calls, results, strict=True):
            if isinstance(result, int):  # a summary
                applied[indices[0]] = Applied(bool(result))
                continue
            for n, i in enumerate(indices):
                applied[i] = Applied(bool(result[2 * n]), int(result[2 * n + 1]))
        return applied

    async def _queue_run(self, pipe: Any, items: Sequence[Turn], run: list[int]) -> list[int]:
        first = items[run[0]]
        keys = window_keys(self.prefix, first.scope, first.scope_id)
        policy = self.policy(first.scope)
        args: list[Any] = [policy.turns, policy.tokens, policy.ttl_s, *policy.low()]
        for i in run:
            args += [_json(items[i].data), int(items[i].data.get("tokens", 0))]
        await self._append(keys=[keys["turns"], keys["tokens"], keys["fold"], keys["summary"],
                                 *(f"{self.prefix}:mem-applied:{items[i].memory_id}" for i in run)],
                           args=args, client=pipe)
        return run

    async def pending_folds(self, windows: Sequence[tuple[str, str]]) -> list[tuple[dict[str, Any] | None,
                                                                                   list[dict[str, Any]]]]:
        """For each (scope, id): its current summary and the turns waiting to be folded into it."""
        try:
            pipe = self._redis.pipeline(transaction=False)
            for scope, scope_id in windows:
                keys = window_keys(self.prefix, scope, scope_id)
                pipe.get(keys["summary"])
                pipe.lrange(keys["fold"], 0, -1)
            raw = await pipe.execute()
        except RedisError as exc:
            raise StoreUnavailableError(f"Redis read of {len(windows)} fold lists failed: {exc}") from exc
        return [(json.loads(raw[i]) if raw[i] else None, [json.loads(t) for t in raw[i + 1]])
                for i in range(0, len(raw), 2)]

    async def read(self, scope: str, scope_id: str, limit: int | None = None) -> Context:
        """Summary and the newest ``limit`` turns in one round trip (pipelined)."""
        keys = window_keys(self.prefix, scope, scope_id)
        n = limit or self.policy(scope).turns
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.get(keys["summary"])
            pipe.lrange(keys["turns"], -n, -1)
            pipe.get(keys["tokens"])
            summary, turns, tokens = await pipe.execute()
        except RedisError as exc:
            raise StoreUnavailableError(f"Redis read of {keys['turns']} failed: {exc}") from exc
        return Context(json.loads(summary) if summary else None, [json.loads(t) for t in turns],
                       int(tokens or 0))

    async def recent(self, scope: str, scope_id: str, limit: int | None = None) -> list[str]:
        """The newest ``limit`` turns as stored (JSON), oldest first."""
        n = limit or self.policy(scope).turns
        try:
            raw = await self._redis.lrange(self.key(scope, scope_id), -n, -1)
        except RedisError as exc:
            raise StoreUnavailableError(f"Redis read of {self.key(scope, scope_id)} failed: {exc}") from exc
        return [_text(item) for item in raw]

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except RedisError as exc:
            raise StoreUnavailableError(f"Redis is not reachable: {exc}") from exc

    async def aclose(self) -> None:
        await self._redis.aclose()
