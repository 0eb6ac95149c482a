"""Rebuild Redis windows (and the Qdrant collection) from ``aios.memory``, then swap them in.

Two phases. :func:`stage` reads the log with a fresh consumer that assigns every partition from
its beginning up to the end offsets seen at the start and never commits, and writes everything
under a temporary Redis key prefix and a new Qdrant generation collection; readers meanwhile see
the live data, untouched. :func:`swap` then replaces the live windows in one MULTI/EXEC (DEL the
live keys, RENAME the rebuilt ones onto their names) and points the collection's alias at the new
generation in one alias operation. Nothing is ever produced to a topic: this module has no
producer, and summaries are replayed from the log, never recomputed by an LLM.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaException, TopicPartition

from aios.connectors.context.windows import RedisContext, window_keys
from aios.schemas.errors import SchemaError
from aios.schemas.events import to_ms
from aios.streams.engine.runtime import open_context, open_vector_memory
from aios.streams.errors import KafkaError
from aios.streams.kafka import make_codec, make_consumer, watermarks
from aios.streams.processors.memory import index_items, to_turn
from aios.streams.sealing import Sealer

if TYPE_CHECKING:
    from aios.connectors.vector.qdrant import VectorMemory
from aios.streams.settings import Settings
from aios.streams.topics import Topics

_BATCH = 500
_QUIET_S = 30.0


@dataclass
class RebuildReport:
    """What a rebuild read and swapped in."""

    topic: str
    scope: str | None
    events: int = 0
    undecodable: int = 0
    applied: int = 0
    windows: int = 0
    expired_windows: int = 0
    keys_swapped: int = 0
    vectors: int | None = None  # None: vector memory is off
    collection: str | None = None
    seconds: float = 0.0
    partitions: dict[int, tuple[int, int]] = field(default_factory=dict)  # partition -> (start, end)


def end_offsets(settings: Settings, topic: str) -> tuple[Any, list[TopicPartition]]:
    """A never-committing consumer assigned to ``topic`` from the beginning, and the end offsets."""
    consumer = make_consumer(settings, group=f"{settings.kafka.topic_prefix}-memory-rebuild-{uuid.uuid4().hex[:8]}")
    try:
        meta = consumer.list_topics(topic, timeout=10)
        tmeta = meta.topics.get(topic)
        if tmeta is None or tmeta.error is not None or not tmeta.partitions:
            raise KafkaError(f"topic {topic!r} does not exist; create the topics with `aios topics create`")
        starts, ends = [], []
        for p in sorted(tmeta.partitions):
            low, high = watermarks(consumer, TopicPartition(topic, p))
            starts.append(TopicPartition(topic, p, low))
            ends.append(TopicPartition(topic, p, high))
    except KafkaException as exc:
        consumer.close()
        raise KafkaError(f"Kafka at {settings.kafka.bootstrap} did not answer: {exc}") from exc
    consumer.assign([tp for tp, end in zip(starts, ends, strict=True) if end.offset > tp.offset])
    return consumer, [TopicPartition(topic, s.partition, s.offset) for s in starts] + ends


def backlog(settings: Settings) -> int:
    """How many records a rebuild would read now (for a progress bar)."""
    consumer, offsets = end_offsets(settings, Topics.from_settings(settings).memory)
    consumer.close()
    half = len(offsets) // 2
    return sum(e.offset - s.offset for s, e in zip(offsets[:half], offsets[half:], strict=True))


@dataclass
class Staged:
    """A rebuild replayed into fresh keys and collection, not yet swapped in."""

    report: RebuildReport
    temp: RedisContext
    live: RedisContext
    last_ts: dict[tuple[str, str], int]
    vectors: VectorMemory | None = None  # the live collection
    generation: VectorMemory | None = None  # the rebuilt one

    async def discard(self) -> None:
        """Delete what was staged (after a failure, or instead of swapping)."""
        keys = [k async for k in self.temp.redis.scan_iter(match=f"{self.temp.prefix}:*", count=1000)]
        for start in range(0, len(keys), 1000):
            await self.temp.redis.delete(*keys[start:start + 1000])
        if self.generation is not None:
            self.generation.drop()

    async def aclose(self) -> None:
        await self.temp.aclose()
        await self.live.aclose()
        if self.vectors is not None:
            self.vectors.close()


async def rebuild_memory(settings: Settings, *, scope: str | None = None,
                         on_progress: Callable[[int], None] | None = None) -> RebuildReport:
    """Replay the memory topic into fresh keys/collection and swap them in; see the module doc."""
    staged = await stage(settings, scope=scope, on_progress=on_progress)
    try:
        return await swap(staged)
    finally:
        await staged.aclose()


async def stage(settings: Settings, *, scope: str | None = None,
                on_progress: Callable[[int], None] | None = None) -> Staged:
    """Replay the memory topic into fresh keys and a new collection generation; nothing live changes."""
    started = time.perf_counter()
    topic = Topics.from_settings(settings).memory
    report = RebuildReport(topic=topic, scope=scope)
    consumer, offsets = end_offsets(settings, topic)
    half = len(offsets) // 2
    remaining = {e.partition: e.offset for s, e in zip(offsets[:half], offsets[half:], strict=True)
                 if e.offset > s.offset}
    report.partitions = {s.partition: (s.offset, e.offset) for s, e in zip(offsets[:half], offsets[half:],
                                                                           strict=True)}
    codec = make_codec(settings, validate=False)
    sealer = Sealer.from_settings(settings)
    tag = uuid.uuid4().hex[:8]
    staged = Staged(report, open_context(settings, prefix=f"{settings.kafka.topic_prefix}:rebuild-{tag}"),
                    open_context(settings), {})
    try:
        if settings.memory.vector_memory:
            staged.vectors = open_vector_memory(settings)
            staged.generation = staged.vectors.generation(tag)
            staged.generation.create()
            report.vectors = 0
        quiet_since = time.monotonic()
        while remaining:
            msgs = consumer.consume(_BATCH, 1.0)
            if not msgs and time.monotonic() - quiet_since > _QUIET_S:
                raise KafkaError(f"{topic}: no records for {_QUIET_S:.0f}s before the end offsets {remaining}")
            quiet_since = time.monotonic() if msgs else quiet_since
            events = []
            for msg in msgs:
                if msg.error() is not None:
                    raise KafkaError(f"consume from {topic} failed: {msg.error()}")
                if int(msg.offset() or 0) + 1 >= remaining.get(int(msg.partition() or 0), 0):
                    remaining.pop(int(msg.partition() or 0), None)
                try:
                    m = codec.decode(msg.value(), expect="MemoryEvent").value
                except SchemaError:
                    report.undecodable += 1  # the live processor dead-lettered it; a rebuild only skips
                    continue
                if scope is None or m["scope"] == scope:
                    events.append(m)
                    turn = to_turn(m)  # a restricted memory's window is its scope's restricted lane
                    window = (turn.scope, turn.scope_id)
                    staged.last_ts[window] = max(staged.last_ts.get(window, 0), to_ms(m["timestamp"]))
            report.events += len(msgs)
            if staged.generation is not None and events:
                items = index_items(events, sealer, local_embedder=settings.memory.embeddings == "local",
                                    processor="memory-rebuild")
                report.vectors = (report.vectors or 0) + staged.generation.upsert(items)
            applied = await staged.temp.apply_many([to_turn(m) for m in events])
            report.applied += sum(a.applied for a in applied)
            if on_progress is not None and msgs:
                on_progress(len(msgs))
        if scope is not None and staged.vectors is not None and staged.generation is not None:
            # A scoped rebuild keeps the other scopes' points: the new generation replaces them all.
            staged.generation.copy_from(staged.vectors, except_scope=scope)
        report.windows = len(staged.last_ts)
    except BaseException:
        await staged.discard()
        await staged.aclose()
        raise
    finally:
        consumer.close()  # never committed: the rebuild leaves no group offsets that matter
    report.seconds = time.perf_counter() - started
    return staged


async def swap(staged: Staged) -> RebuildReport:
    """Swap the staged windows and collection in, each in one atomic step; see the module doc."""
    started = time.perf_counter()
    report = staged.report
    try:
        report.expired_windows, report.keys_swapped = await _swap_redis(staged.temp, staged.live, staged.last_ts)
        if staged.vectors is not None and staged.generation is not None:
            staged.vectors.swap_in(staged.generation)
            report.collection = staged.generation.collection
    except BaseException:
        await staged.discard()
        raise
    report.seconds += time.perf_counter() - started
    return report


async def _swap_redis(temp: RedisContext, live: RedisContext,
                      last_ts: dict[tuple[str, str], int]) -> tuple[int, int]:
    """Give each rebuilt window its remaining TTL, then replace the live keys with the rebuilt ones."""
    r = temp.redis
    now = int(time.time() * 1000)
    windows = list(last_ts)
    pipe = r.pipeline(transaction=False)
    for scope, scope_id in windows:
        left_ms = last_ts[(scope, scope_id)] + temp.policy(scope).ttl_s * 1000 - now
        for key in window_keys(temp.prefix, scope, scope_id).values():
            # A window whose TTL has run out since its last write stays gone, as it would live.
            pipe.pexpire(key, left_ms) if left_ms > 0 else pipe.delete(key)
            pipe.exists(key)
    flags = (await pipe.execute())[1::2]
    expired = sum(1 for (scope, _), ts in last_ts.items() if ts + temp.policy(scope).ttl_s * 1000 <= now)
    markers = [_text(k) async for k in r.scan_iter(match=f"{temp.prefix}:mem-applied:*", count=1000)]
    # One transaction: the live keys go (including ones the rebuild did not produce, like an old
    # summary) and the rebuilt ones take their names, with the applied-id markers, so a reader
    # sees either the old windows or the new ones, and a crash never leaves windows without markers.
    swap = r.pipeline(transaction=True)
    for i, (scope, scope_id) in enumerate(windows):
        new = list(window_keys(temp.prefix, scope, scope_id).values())
        old = list(window_keys(live.prefix, scope, scope_id).values())
        swap.delete(*old)
        for j, (src, dst) in enumerate(zip(new, old, strict=True)):
            if flags[i * len(new) + j]:
                swap.rename(src, dst)
    for name in markers:
        swap.rename(name, live.prefix + name[len(temp.prefix):])
    # A key whose TTL ran out in the meantime fails its RENAME alone ("no such key"): it is gone,
    # as it would be live, and the rest of the transaction stands.
    results = await swap.execute(raise_on_error=False)
    return expired, sum(1 for res in results if res is True)


def _text(key: bytes | str) -> str:
    return key.decode() if isinstance(key, bytes) else key
