"""``aios bench memory``: context fetch latency, memory-processor throughput beside raw redis-py
pipelined writes, embedding speed, and Qdrant local-mode recall latency as the collection grows.

Every figure and its baseline come from the same run. The processor runs in this process on
fresh topics, with the offline provider (extractive summaries) and vector memory off: its figure
is "before embedding", which is measured apart. Recall is measured on random unit vectors of the
model's dimension, so 100k points need no 100k embeddings on a small machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import redis
from prometheus_client import REGISTRY

from aios.bench.toolkit import percentile
from aios.connectors.context.tokens import TokenCounter
from aios.connectors.context.windows import RedisContext, ScopePolicy
from aios.streams.errors import OrchestrationError
from aios.streams.kafka import EventProducer
from aios.streams.pipeline import running
from aios.streams.processors.memory import NAME as MEMORY
from aios.streams.processors.memory import stored, to_turn
from aios.streams.settings import Settings
from aios.streams.topics import Topics, create_topics, delete_topics

# A phase of the bench: its name and how many steps it has; gives the function that advances it.
Phase = Callable[[str, int], AbstractContextManager[Callable[[int], None]]]

TARGETS = {"fetch_p99_ms": 3.0, "processor_events_per_s": 5000, "recall_p50_ms_at_10k": 25.0}

_WORDS = ("ledger invoice refund schema tenant migration deploy rollback cache latency queue worker "
          "partition replica timeout retry budget token summary window review design test load "
          "staging release index shard backup restore alert metric trace span service gateway").split()
_ROLES = ("backend", "frontend", "qa", "planner", "ops")


def _rng(seed: int) -> random.Random:
    return random.Random(seed)  # noqa: S311 - reproducible bench text, not secrets


def sentence(rng: random.Random, n: int) -> str:
    """A turn-shaped sentence of project vocabulary (what agents write into memory)."""
    words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(8, 20)))
    return f"[{rng.choice(_ROLES)}] task t-{n}: {words}.\n=> done: {' '.join(rng.sample(_WORDS, 6))}."


def _ms(values: Sequence[float]) -> dict[str, float]:
    as_ms = [v * 1000 for v in values]
    return {"p50_ms": round(percentile(as_ms, 50), 3), "p99_ms": round(percentile(as_ms, 99), 3),
            "max_ms": round(max(as_ms), 3), "count": len(as_ms)}


def _event(n: int, text: str, window: str, tokens: int) -> dict[str, Any]:
    return {"event_id": uuid.uuid4().hex, "timestamp": int(time.time() * 1000), "trace_id": "bench",
            "memory_id": f"bench-{n}", "scope": "project", "scope_id": window, "project_id": window,
            "kind": "turn", "speaker": "bench", "content": text, "task_id": f"t-{n}", "tokens": tokens}


# --- context fetch --------------------------------------------------------------------------------

async def bench_fetch(settings: Settings, *, turns: int, fetches: int, counter: TokenCounter,
                      tick: Callable[[int], None]) -> dict[str, Any]:
    """Read a ``turns``-turn window (summary + turns + token total, one pipelined round trip)."""
    rng = _rng(7)
    prefix = f"{settings.kafka.topic_prefix}:bench-{uuid.uuid4().hex[:8]}"
    policy = ScopePolicy(turns=turns, tokens=1_000_000, ttl_s=600)
    ctx = RedisContext.from_url(settings.stores.redis_url, prefix=prefix, default=policy)
    try:
        texts = [sentence(rng, n) for n in range(turns)]
        for n, text in enumerate(texts):
            await ctx.append("project", "fetch", f"f-{n}", {"memory_id": f"f-{n}", "kind": "turn",
                                                            "content": text, "tokens": counter.count(text)})
        window = await ctx.read("project", "fetch")
        if len(window.turns) != turns:
            raise OrchestrationError(f"the bench window holds {len(window.turns)} turns, not {turns}")
        key = ctx.key("project", "fetch")
        fetch, raw = [], []
        for i in range(fetches):
            started = time.perf_counter()
            await ctx.read("project", "fetch")
            fetch.append(time.perf_counter() - started)
            started = time.perf_counter()
            await ctx.redis.lrange(key, -turns, -1)  # the baseline: one bare LRANGE of the same turns
            raw.append(time.perf_counter() - started)
            if i % 100 == 99:
                tick(100)
        return {"turns": turns, "tokens": window.tokens,
                "bytes": sum(len(json.dumps(t)) for t in window.turns),
                "context_read": _ms(fetch), "raw_lrange": _ms(raw)}
    finally:
        keys = [k async for k in ctx.redis.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await ctx.redis.delete(*keys)
        await ctx.aclose()


# --- memory processor vs raw redis-py -------------------------------------------------------------

def _count(outcome: str) -> float:
    """The memory processor's events so far with ``outcome`` (it runs in this process)."""
    return REGISTRY.get_sample_value("aios_events_processed_total", {"processor": MEMORY, "outcome": outcome}) or 0.0


async def bench_processor(settings: Settings, *, events: int, windows: int, counter: TokenCounter,
                          tick: Callable[[int], None]) -> dict[str, Any]:
    """The memory processor (Kafka in, Redis windows and summaries out) beside raw redis-py."""
    rng = _rng(11)
    texts = [sentence(rng, n) for n in range(min(events, 2000))]
    tokens = counter.count_many(texts)
    batch = [_event(n, texts[n % len(texts)], f"w{n % windows}", tokens[n % len(texts)]) for n in range(events)]
    s = settings.replace(topic_prefix=f"benchmem{uuid.uuid4().hex[:8]}", llm="offline:echo", vector_memory=False, metrics_port=0)
    create_topics(s)
    try:
        producer = EventProducer(s)
        for event in batch:
            producer.send(Topics.from_settings(s).memory, "MemoryEvent", event, key=event["scope_id"])
        producer.flush()
        base, summaries_before = _count("applied"), _count("summary")
        first: tuple[float, float] | None = None
        async with running(s, ["memory"]) as live:
            seen = 0.0
            deadline = time.monotonic() + 600
            while seen < events:
                live.check()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the memory processor applied {seen:.0f} of {events} events in 600s")
                await asyncio.sleep(0.002)
                now, done = time.perf_counter(), _count("applied") - base
                if done > seen:
                    tick(int(done - seen))
                    seen = done
                    if first is None:
                        first = (now, done)
            finished = time.perf_counter()
        if first is None:
            raise OrchestrationError("the memory processor applied nothing")
        # Timed from the first batch seen applied (the group join before it is not throughput).
        processor_rate = (events - first[1]) / max(finished - first[0], 1e-9)
        summaries = int(_count("summary") - summaries_before)
        ctx_rate = await _context_apply_rate(s, batch)
        raw_rate = _raw_redis_rate(s, batch)
    finally:
        await _cleanup(s)
    return {"events": events, "windows": windows, "provider": "offline:echo (extractive summaries)",
            "processor": {"events_per_s": round(processor_rate), "summaries_total": summaries},
            "context_apply_many": {"events_per_s": round(ctx_rate)},
            "raw_redis_pipeline": {"events_per_s": round(raw_rate)},
            "processor_over_raw": round(processor_rate / raw_rate, 3)}


async def _context_apply_rate(s: Settings, batch: list[dict[str, Any]]) -> float:
    """The processor's Redis step alone (Lua append per event, 500 per pipelined round trip)."""
    ctx = RedisContext.from_url(s.stores.redis_url, prefix=f"{s.kafka.topic_prefix}:ctxonly",
                                default=ScopePolicy(s.memory.context_window_turns, s.memory.context_window_tokens, 600,
                                                    s.memory.context_trim_to))
    try:
        turns = [to_turn(e) for e in batch]
        started = time.perf_counter()
        for i in range(0, len(turns), 500):
            await ctx.apply_many(turns[i:i + 500])
        return len(turns) / (time.perf_counter() - started)
    finally:
        await ctx.aclose()


def _raw_redis_rate(s: Settings, batch: list[dict[str, Any]]) -> float:
    """The baseline: redis-py RPUSH + EXPIRE of the same JSON, 500 per pipeline, no dedup or bounds."""
    client = redis.Redis.from_url(s.stores.redis_url)
    try:
        values = [(f"{s.kafka.topic_prefix}:raw:{e['scope_id']}", json.dumps(stored(e), separators=(",", ":")))
                  for e in batch]
        started = time.perf_counter()
        for i in range(0, len(values), 500):
            pipe = client.pipeline(transaction=False)
            for key, value in values[i:i + 500]:
                pipe.rpush(key, value)
                pipe.expire(key, 600)
            pipe.execute()
        return len(values) / (time.perf_counter() - started)
    finally:
        client.close()


async def _cleanup(s: Settings) -> None:
    client = redis.Redis.from_url(s.stores.redis_url)
    try:
        keys = list(client.scan_iter(match=f"{s.kafka.topic_prefix}:*", count=1000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i:i + 1000])
    finally:
        client.close()
    delete_topics(s)


# --- embeddings -----------------------------------------------------------------------------------

def bench_embedding(settings: Settings, *, sentences: int, tick: Callable[[int], None]) -> dict[str, Any]:
    """Sentences/s of the local ONNX MiniLM on real turn-shaped sentences."""
    from aios.connectors.vector.onnx import OnnxEmbedder

    rng = _rng(3)
    texts = [sentence(rng, n) for n in range(sentences)]
    embedder = OnnxEmbedder(settings.memory.embedding_model_dir)
    embedder.embed(texts[:32])  # warm-up: the first run allocates the session's buffers
    started = time.perf_counter()
    for i in range(0, len(texts), 256):
        embedder.embed(texts[i:i + 256])
        tick(len(texts[i:i + 256]))
    seconds = time.perf_counter() - started
    return {"sentences": sentences, "seconds": round(seconds, 2), "sentences_per_s": round(sentences / seconds, 1),
            "dimension": embedder.dimension, "threads": os.cpu_count()}


# --- recall in Qdrant local mode ------------------------------------------------------------------

def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    unit: np.ndarray[Any, np.dtype[np.float32]] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return unit


def bench_recall(size: int, *, queries: int, dim: int, on_disk: bool, max_build_s: float, query_budget_s: float,
                 tick: Callable[[int], None]) -> dict[str, Any]:
    """Fill a local-mode collection with ``size`` random unit vectors, then time top-5 searches.

    ``on_disk=False`` keeps the collection in memory: the same local-mode search code over the
    same numpy arrays, without the per-point SQLite commit that bounds how fast a disk collection
    can be filled (see ``upserts_per_s``).
    """
    from qdrant_client import QdrantClient

    from aios.connectors.vector.base import MemoryItem
    from aios.connectors.vector.qdrant import VectorMemory

    rng = np.random.default_rng(size)
    with tempfile.TemporaryDirectory(prefix="aios-bench-qdrant-") as tmp:
        vm = (VectorMemory.local(tmp, dimension=dim) if on_disk
              else VectorMemory(QdrantClient(location=":memory:"), local=True, where=":memory:", dimension=dim))
        with vm:
            vm.ensure_collection()
            started, built = time.perf_counter(), 0
            while built < size and time.perf_counter() - started < max_build_s:
                n = min(1000 if on_disk else 10_000, size - built)
                items = [MemoryItem(memory_id=f"v-{i}", text=f"vector {i}", project=f"p{i % 10}", scope="project",
                                    scope_id=f"p{i % 10}", role="bench", kind="turn", ts=i)
                         for i in range(built, built + n)]
                vm.upsert(items, vectors=_unit(rng, n, dim))
                built += n
                tick(n)
            build_s = time.perf_counter() - started
            plain: list[float] = []
            filtered: list[float] = []
            deadline = time.perf_counter() + query_budget_s
            for q in _unit(rng, queries, dim):
                if len(plain) >= 10 and time.perf_counter() > deadline:
                    break  # slow searches: enough samples for a median
                t0 = time.perf_counter()
                vm.search(q, 5)
                plain.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                vm.search(q, 5, project="p3")
                filtered.append(time.perf_counter() - t0)
    return {"requested": size, "vectors": built, "complete": built == size, "storage": "disk" if on_disk else "memory",
            "build_s": round(build_s, 1), "upserts_per_s": round(built / build_s), "top5": _ms(plain),
            "top5_project_filter": _ms(filtered)}


def bench_memory(settings: Settings, *, turns: int, fetches: int, events: int, windows: int, sentences: int,
                 sizes: Sequence[int], queries: int, disk_max: int, max_build_s: float, query_budget_s: float,
                 phase: Phase) -> dict[str, Any]:
    """Every memory figure in one run; see the module doc."""
    counter = TokenCounter.from_model_dir(settings.memory.embedding_model_dir)
    doc: dict[str, Any] = {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
                           "tokenizer": counter.label, "targets": TARGETS}
    with phase(f"context fetch ({turns}-turn window)", fetches) as tick:
        doc["fetch"] = asyncio.run(bench_fetch(settings, turns=turns, fetches=fetches, counter=counter, tick=tick))
    with phase("memory processor events", events) as tick:
        doc["processor"] = asyncio.run(bench_processor(settings, events=events, windows=windows, counter=counter,
                                                       tick=tick))
    with phase("embedded sentences", sentences) as tick:
        doc["embedding"] = bench_embedding(settings, sentences=sentences, tick=tick)
    doc["recall"] = []
    for size in sizes:
        on_disk = size <= disk_max
        with phase(f"Qdrant local ({'disk' if on_disk else 'memory'}): {size:,} vectors", size) as tick:
            doc["recall"].append(bench_recall(size, queries=queries, dim=doc["embedding"]["dimension"],
                                              on_disk=on_disk, max_build_s=max_build_s,
                                              query_budget_s=query_budget_s, tick=tick))
    doc["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    return doc


def iter_sizes(text: str) -> Iterator[int]:
    """``10000,100000`` (or ``10k,100k``) as sizes."""
    for part in text.split(","):
        part = part.strip().lower()
        if part:
            yield int(float(part[:-1]) * 1000) if part.endswith("k") else int(part)
