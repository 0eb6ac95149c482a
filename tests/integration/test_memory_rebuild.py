"""``aios memory rebuild`` on real Kafka, Redis and Qdrant local mode: a real FLUSHDB then a rebuild
gives the same contexts; during a rebuild readers see the old data until the swap; nothing is
ever produced to a topic."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from aios.connectors.context.tokens import TokenCounter
from aios.streams.engine.runtime import open_context
from aios.streams.errors import KafkaError
from aios.streams.jobs.memory_rebuild import rebuild_memory, stage, swap
from aios.streams.pipeline import running
from aios.streams.processors.memory import to_turn
from aios.streams.settings import Settings
from aios.streams.topics import admin_client
from tests.integration.helpers import wait_until
from tests.integration.test_memory import (
    MODEL_DIR,
    TURNS,
    _end_offsets,
    _last_turn_applied,
    delete_prefix,
    memory_event,
    produce,
    snapshot,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def own_db(settings: Settings) -> Iterator[Settings]:
    """Settings on an empty Redis database of their own, so the test may FLUSHDB for real."""
    base = settings.stores.redis_url.rsplit("/", 1)[0]
    for db in range(15, 0, -1):
        client = redis.Redis.from_url(f"{base}/{db}")
        claim = f"aios-test-claim-{uuid.uuid4().hex}"
        # Empty and still ours after the claim: another test run did not take it meanwhile.
        if client.dbsize() == 0 and client.set(claim, "1", nx=True, ex=600) and client.dbsize() == 1:
            client.delete(claim)
            yield settings.replace(redis_url=f"{base}/{db}", context_window_tokens=120, context_summary_tokens=400)
            client.flushdb()
            client.close()
            return
        client.close()
    pytest.fail(f"no empty Redis database among 1-15 at {base} to FLUSHDB in")


def all_end_offsets(s: Settings) -> dict[str, list[int]]:
    topics = [t for t in admin_client(s).list_topics(timeout=10).topics if t.startswith(f"{s.kafka.topic_prefix}.")]
    assert len(topics) > 5
    return {t: _end_offsets(s, t) for t in sorted(topics)}


async def test_rebuild_after_flushdb_gives_the_same_contexts(own_db: Settings) -> None:
    s = own_db
    counter = TokenCounter.from_model_dir(MODEL_DIR)
    produce(s, [memory_event(s.kafka.topic_prefix, n, t, tokens=counter.count(t), scope_id=f"proj-{n % 2}")
                for n, t in enumerate(TURNS)])
    context = open_context(s)
    try:
        async with running(s, ["memory"]):
            for p in ("proj-0", "proj-1"):
                last = max(n for n in range(len(TURNS)) if f"proj-{n % 2}" == p)
                await wait_until(lambda p=p, last=last: _last_turn_applied(context, p, f"task-{last}:1:turn"))
        before = {p: await snapshot(context, p) for p in ("proj-0", "proj-1")}
        assert all(b[0] for b in before.values()), "both windows folded into a summary"
        offsets = all_end_offsets(s)

        assert await context.redis.flushdb()
        assert await context.redis.dbsize() == 0

        report = await rebuild_memory(s)

        assert {p: await snapshot(context, p) for p in ("proj-0", "proj-1")} == before
        assert report.windows == 2 and report.keys_swapped > 0 and report.vectors is None
        assert all_end_offsets(s) == offsets  # no topic got a single record
        assert [k async for k in context.redis.scan_iter(match=f"{s.kafka.topic_prefix}:rebuild-*")] == []
        # The applied-id markers came back too: replaying the log into the live windows is a no-op.
        replayed = await context.apply_many([to_turn(memory_event(s.kafka.topic_prefix, 3, TURNS[3],
                                                                  tokens=counter.count(TURNS[3]), scope_id="proj-1"))])
        assert not replayed[0].applied
    finally:
        await context.aclose()


def turns_of(window: Any) -> list[str]:
    return [t["memory_id"] for t in window.turns]


async def test_readers_see_the_old_data_until_the_swap(settings: Settings) -> None:
    s = settings.replace(vector_memory=True, embedding_model_dir=MODEL_DIR,
                                    context_window_turns=50)
    counter = TokenCounter.from_model_dir(MODEL_DIR)
    old = [memory_event(s.kafka.topic_prefix, n, t, tokens=counter.count(t)) for n, t in enumerate(TURNS[:6])]
    task = {**memory_event(s.kafka.topic_prefix, 99, "a task-scoped note on retries", tokens=7),
            "scope": "task", "scope_id": "task-99", "memory_id": "task-99:note"}
    produce(s, [*old, task])
    first = await rebuild_memory(s)
    assert first.vectors == 7 and first.collection is not None
    context = open_context(s)
    try:
        live_before = await context.read("project", "proj-mem")
        assert turns_of(live_before) == [f"task-{n}:1:turn" for n in range(6)]
        produce(s, [memory_event(s.kafka.topic_prefix, n, t, tokens=counter.count(t)) for n, t in enumerate(TURNS[6:9], 6)])

        staged = await stage(s, scope="project")
        try:
            assert staged.vectors is not None and staged.generation is not None
            # Staged: everything new sits in fresh keys and a new generation; readers see the old.
            assert await context.read("project", "proj-mem") == live_before
            assert staged.vectors.target() == first.collection != staged.generation.collection
            assert staged.vectors.count() == 7 and staged.generation.count() == 10
            assert staged.generation.count(scope="task") == 1  # other scopes carried over

            report = await swap(staged)

            assert turns_of(await context.read("project", "proj-mem")) == [f"task-{n}:1:turn" for n in range(9)]
            assert staged.vectors.target() == staged.generation.collection == report.collection
            assert staged.vectors.count() == 10 and staged.vectors.count(scope="task") == 1
            assert staged.vectors.search(TURNS[7], 1)[0].id == "task-7:1:turn"
            collections = {c.name for c in staged.vectors._client.get_collections().collections}
            assert first.collection not in collections  # the old generation was dropped
        finally:
            await staged.aclose()
    finally:
        await delete_prefix(context.redis, s.kafka.topic_prefix)
        await context.aclose()


async def test_a_discarded_stage_leaves_the_live_data_alone(settings: Settings) -> None:
    s = settings.replace(vector_memory=True, embedding_model_dir=MODEL_DIR)
    produce(s, [memory_event(s.kafka.topic_prefix, n, t, tokens=10) for n, t in enumerate(TURNS[:3])])
    await rebuild_memory(s)
    context = open_context(s)
    try:
        before = await context.read("project", "proj-mem")
        staged = await stage(s)
        try:
            assert staged.generation is not None and staged.vectors is not None
            generation = staged.generation.collection
            await staged.discard()
            assert [k async for k in context.redis.scan_iter(match=f"{s.kafka.topic_prefix}:rebuild-*")] == []
            names = {c.name for c in staged.vectors._client.get_collections().collections}
            assert generation not in names and staged.vectors.count() == 3
        finally:
            await staged.aclose()
        assert await context.read("project", "proj-mem") == before
    finally:
        await delete_prefix(context.redis, s.kafka.topic_prefix)
        await context.aclose()


async def test_rebuilding_without_the_topics_says_how_to_create_them(base_settings: Settings) -> None:
    s = base_settings.replace(topic_prefix=f"missing{uuid.uuid4().hex[:8]}")
    with pytest.raises(KafkaError, match="aios topics create"):
        await rebuild_memory(s)
