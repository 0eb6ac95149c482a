"""Rolling context on real Redis and Kafka: count and token bounds, TTLs, summaries, prompt budgets,
idempotent replay and rebuild from the log. Tokens are counted with the real MiniLM tokenizer.

Every test runs under its own topic prefix (the ``settings`` fixture), which is also its Redis key
prefix: tests delete only keys under that prefix, never FLUSHDB, because other tests share Redis.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given
from hypothesis import settings as settings_
from hypothesis import strategies as st

from aios.agents.memory import EXTRACTIVE_LABEL, first_sentence
from aios.agents.runner import AgentTask, TokenBudget, build_request
from aios.connectors.context.tokens import TokenCounter
from aios.connectors.context.windows import SCOPES, RedisContext, ScopePolicy, Turn, window_keys
from aios.schemas.errors import ConfigError
from aios.streams.engine.runtime import open_context
from aios.streams.kafka import EventProducer, TopicReader
from aios.streams.pipeline import running
from aios.streams.settings import Settings, load_settings
from tests.integration.helpers import wait_until

pytestmark = pytest.mark.integration

MODEL_DIR = Path(__file__).resolve().parents[2].parent / "shared/models/all-MiniLM-L6-v2-onnx"


@pytest.fixture(scope="session")
def counter() -> TokenCounter:
    tokens = TokenCounter.from_model_dir(MODEL_DIR)
    assert not tokens.is_fallback, f"the tokenizer should load from {MODEL_DIR}"
    return tokens


@pytest.fixture
async def ctx(settings: Settings) -> AsyncIterator[RedisContext]:
    context = RedisContext.from_url(settings.stores.redis_url, prefix=settings.kafka.topic_prefix,
                                    default=ScopePolicy(turns=5, tokens=60, ttl_s=60),
                                    policies={"task": ScopePolicy(turns=5, tokens=60, ttl_s=1)})
    yield context
    await delete_prefix(context.redis, settings.kafka.topic_prefix)
    await context.aclose()


async def delete_prefix(r: Any, prefix: str) -> int:
    """Delete this test's keys only (other tests share the Redis server)."""
    keys = [k async for k in r.scan_iter(match=f"{prefix}:*", count=1000)]
    if keys:
        await r.delete(*keys)
    return len(keys)


def turn(n: int, text: str, counter: TokenCounter, **extra: Any) -> dict[str, Any]:
    return {"memory_id": f"m-{n}", "kind": "turn", "content": text, "tokens": counter.count(text), **extra}


async def test_window_is_bounded_by_count(ctx: RedisContext, counter: TokenCounter) -> None:
    for n in range(12):
        assert await ctx.append("project", "count", f"m-{n}", turn(n, f"turn {n}", counter)) is True
    window = await ctx.read("project", "count")
    assert [t["content"] for t in window.turns] == [f"turn {n}" for n in range(7, 12)]
    (_, folded), = await ctx.pending_folds([("project", "count")])
    assert [t["content"] for t in folded] == [f"turn {n}" for n in range(7)]
    assert window.tokens == sum(t["tokens"] for t in window.turns)


async def test_window_is_bounded_by_real_tokens(ctx: RedisContext, counter: TokenCounter) -> None:
    texts = [f"Step {n}: the orchestrator reassigned the shipping task after a timeout." for n in range(5)]
    sizes = counter.count_many(texts)
    assert all(12 <= s <= 30 for s in sizes), sizes  # WordPiece tokens, not words
    for n, text in enumerate(texts):
        await ctx.append("project", "tok", f"m-{n}", turn(n, text, counter))
    window = await ctx.read("project", "tok")
    assert window.tokens <= 60 < sum(sizes)
    assert window.tokens == sum(counter.count(t["content"]) for t in window.turns)
    assert window.turns[-1]["content"] == texts[-1] and len(window.turns) < 5


async def test_a_full_window_is_trimmed_below_its_bound_so_folds_come_in_chunks(
        settings: Settings, counter: TokenCounter) -> None:
    ctx = RedisContext.from_url(settings.stores.redis_url, prefix=settings.kafka.topic_prefix,
                                default=ScopePolicy(turns=10, tokens=10_000, ttl_s=60, trim_to=0.6))
    try:
        def item(n: int) -> Turn:
            return Turn("project", "trim", f"m-{n}", "turn", turn(n, f"turn {n}", counter))

        evicted = [a.evicted for a in await ctx.apply_many([item(n) for n in range(16)])]
        # The 11th turn takes the window over 10 turns: it is trimmed to 6 (0.6 of the bound) and
        # refills to 10 before the 16th trims it again: two folds of 5 turns, not six of 1.
        assert evicted == [0] * 10 + [5] + [0] * 4 + [5]
        window = await ctx.read("project", "trim")
        assert [t["content"] for t in window.turns] == [f"turn {n}" for n in range(10, 16)]
        (_, folded), = await ctx.pending_folds([("project", "trim")])
        assert [t["content"] for t in folded] == [f"turn {n}" for n in range(10)]
        assert (await ctx.apply_many([item(16)]))[0].evicted == 0
    finally:
        await delete_prefix(ctx.redis, settings.kafka.topic_prefix)
        await ctx.aclose()


async def test_a_summary_in_a_batch_covers_only_the_turns_folded_before_it(ctx: RedisContext,
                                                                          counter: TokenCounter) -> None:
    def item(n: int) -> Turn:
        return Turn("project", "order", f"m-{n}", "turn", turn(n, f"turn {n}", counter))

    summary = Turn("project", "order", "project:order:summary:1", "summary",
                   {"memory_id": "project:order:summary:1", "kind": "summary", "content": "turns 0 and 1",
                    "tokens": 4, "seq": 1})
    # One pipelined batch; the window keeps 5 turns: turns 5 and 6 push 0 and 1 out, the summary
    # folds those two, and turn 7 pushes 2 out after it.
    applied = await ctx.apply_many([*(item(n) for n in range(7)), summary, item(7), item(3)])
    assert [a.applied for a in applied] == [True] * 9 + [False]  # m-3 again: a replay
    assert [a.evicted for a in applied] == [0] * 5 + [1, 1, 0, 1, 0]
    (current, folded), = await ctx.pending_folds([("project", "order")])
    assert current is not None and current["content"] == "turns 0 and 1"
    assert [t["content"] for t in folded] == ["turn 2"]


async def test_replayed_memory_ids_are_applied_once(ctx: RedisContext, counter: TokenCounter) -> None:
    for _ in range(3):
        for n in range(8):
            await ctx.append("project", "replay", f"m-{n}", turn(n, f"turn {n}", counter))
    window = await ctx.read("project", "replay")
    (_, folded), = await ctx.pending_folds([("project", "replay")])
    assert len(window.turns) == 5 and len(folded) == 3


async def test_a_scope_ttl_expires_the_window(ctx: RedisContext, counter: TokenCounter) -> None:
    await ctx.append("task", "short", "m-1", turn(1, "lives one second", counter))
    await ctx.append("project", "long", "m-2", turn(2, "lives a minute", counter))
    keys = window_keys(ctx.prefix, "task", "short")
    assert await ctx.redis.exists(keys["turns"], keys["tokens"]) == 2
    await asyncio.sleep(2.2)
    assert await ctx.redis.exists(*keys.values()) == 0
    assert (await ctx.read("task", "short")).turns == []
    assert [t["content"] for t in (await ctx.read("project", "long")).turns] == ["lives a minute"]
    assert 0 < await ctx.redis.ttl(window_keys(ctx.prefix, "project", "long")["turns"]) <= 60


def test_settings_carry_a_ttl_per_scope(settings: Settings) -> None:
    s = settings.replace(context_scope_ttl_s={"task": 5})
    assert s.memory.ttl_for("task") == 5 and s.memory.ttl_for("project") == s.memory.context_ttl_s
    context = open_context(s)
    assert context.policy("task").ttl_s == 5 and context.policy("agent").ttl_s == s.memory.context_ttl_s


async def test_each_scope_has_its_own_retention_policy(settings: Settings, counter: TokenCounter) -> None:
    s = load_settings(topic_prefix=settings.kafka.topic_prefix, context_scope_turns={"task": 3},
                      context_scope_tokens={"agent": 40}, context_scope_ttl_s={"session": 7, "task": 11})
    context = open_context(s)
    try:
        texts = [f"Note {n}: the deploy of service {n} went through review and shipped." for n in range(6)]
        for scope in SCOPES:
            for n, text in enumerate(texts):
                await context.append(scope, "policy", f"{scope}-{n}", turn(n, text, counter))
        windows = {scope: await context.read(scope, "policy") for scope in SCOPES}
        assert len(windows["task"].turns) == int(3 * s.memory.context_trim_to)  # its own bound, then trimmed
        assert windows["agent"].tokens <= 40 < windows["project"].tokens  # its own token bound
        assert len(windows["project"].turns) == len(windows["session"].turns) == 6  # the defaults
        ttls = {scope: await context.redis.ttl(window_keys(s.kafka.topic_prefix, scope, "policy")["turns"])
                for scope in SCOPES}
        assert 0 < ttls["session"] <= 7 and 7 < ttls["task"] <= 11
        assert ttls["project"] > 11 and ttls["agent"] > 11
    finally:
        await delete_prefix(context.redis, s.kafka.topic_prefix)
        await context.aclose()


def test_a_policy_for_an_unknown_scope_says_what_to_fix() -> None:
    with pytest.raises(ConfigError, match="AIOS_CONTEXT_SCOPE_TURNS: team=3 is not valid; name scopes from"):
        load_settings(context_scope_turns={"team": 3})
    with pytest.raises(ConfigError, match="AIOS_CONTEXT_SCOPE_TOKENS: task=0"):
        load_settings(context_scope_tokens={"task": 0})


def test_the_prompt_stays_within_the_role_budget(counter: TokenCounter) -> None:
    history = [f"[backend] task t-{n}: build part {n} of the billing service\n=> done, tests pass " * 3
               for n in range(60)]
    summary = EXTRACTIVE_LABEL + "\n" + "\n".join(f"- earlier decision {n} about invoices" for n in range(40))
    # general: a free-text role, whose short persona leaves room in a 120-token budget (a
    # structured role's system prompt carries its JSON Schema contract, ~200 tokens).
    task = AgentTask("t-61", "p", "general", "Add refunds to the billing service " * 20,
                     context={"t-60": "the invoice schema " * 100}, history=history, summary=summary,
                     recall=["a recalled memory about refunds"])
    for tokens in (120, 400, 1500):
        budget = TokenBudget(tokens, counter.count, counter.truncate)
        request = build_request(task, budget=budget)
        system, user = (m.content for m in request.messages)
        assert 0.85 * tokens <= counter.count(system) + counter.count(user) <= tokens  # well used, never over
        if tokens >= 1500:
            assert "a recalled memory about refunds" in user and "earlier decision 39" in user
            assert "build part 59 " in user and "build part 0 " not in user  # newest turns first
    assert counter.count(build_request(task).messages[1].content) > 1000  # without a budget it is longer


_words = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=40)
_texts = st.lists(_words, min_size=1, max_size=30).map(" ".join)


@settings_(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(description=_texts, deps=st.lists(_texts, max_size=3), history=st.lists(_texts, max_size=40),
       summary=_texts, recall=st.lists(_texts, max_size=4), role=st.sampled_from(["general", "qa", "planner"]),
       room=st.integers(16, 600))
def test_prompts_of_any_text_stay_within_the_budget(counter: TokenCounter, description: str, deps: list[str],
                                                     history: list[str], summary: str, recall: list[str],
                                                     role: str, room: int) -> None:
    # Parts are counted separately and summed (not the assembled prompt): this checks the sum bounds
    # the real tokenizer's count of the whole, for punctuation, CJK and emoji alike. The budget
    # leaves `room` beyond the role's system prompt (a contract role's prompt carries its schema).
    task = AgentTask("t", "p", role, description, context={f"d{i}": d for i, d in enumerate(deps)},
                     history=history, summary=summary, recall=recall)
    system = build_request(AgentTask("t", "p", role, "x")).messages[0].content
    tokens = counter.count(system) + room
    request = build_request(task, budget=TokenBudget(tokens, counter.count, counter.truncate))
    assert sum(counter.count(m.content) for m in request.messages) <= tokens


def memory_event(prefix: str, n: int, text: str, *, scope_id: str = "proj-mem", tokens: int = 0) -> dict[str, Any]:
    return {"event_id": uuid.uuid4().hex, "timestamp": int(time.time() * 1000), "trace_id": "t",
            "memory_id": f"task-{n}:1:turn", "scope": "project", "scope_id": scope_id, "project_id": scope_id,
            "kind": "turn", "speaker": "agent-x", "content": text, "task_id": f"task-{n}", "tokens": tokens}


def produce(settings: Settings, events: list[dict[str, Any]]) -> None:
    producer = EventProducer(settings)
    for event in events:
        producer.send(f"{settings.kafka.topic_prefix}.memory", "MemoryEvent", event, key=event["scope_id"])
    producer.flush()


def read_memory_topic(settings: Settings) -> list[dict[str, Any]]:
    reader = TopicReader(settings, f"{settings.kafka.topic_prefix}.memory", from_beginning=True)
    try:
        return [d.value for _, d in reader.events(timeout_s=3) if not isinstance(d, Exception)]
    finally:
        reader.close()


TURNS = [f"Decision {n}: the payments team chose option {n} for the ledger. It was reviewed on day {n}."
         for n in range(20)]


async def snapshot(context: RedisContext, scope_id: str) -> tuple[Any, list[Any], int]:
    window = await context.read("project", scope_id)
    summary = dict(window.summary or {})
    return summary, window.turns, window.tokens


@pytest.fixture
def small_windows(settings: Settings) -> Settings:
    return settings.replace(context_window_tokens=120, context_summary_tokens=400)


async def test_an_over_budget_window_folds_into_a_summary_event(small_windows: Settings,
                                                                counter: TokenCounter) -> None:
    s = small_windows
    produce(s, [memory_event(s.kafka.topic_prefix, n, t, tokens=counter.count(t)) for n, t in enumerate(TURNS)])
    context = open_context(s)
    try:
        async with running(s, ["memory"]):
            applied = await wait_until(lambda: _last_turn_applied(context, "proj-mem", "task-19:1:turn"))
            assert applied
        summary, turns, tokens = await snapshot(context, "proj-mem")
        assert tokens <= 120 and turns[-1]["content"] == TURNS[-1]
        assert summary["content"].startswith(EXTRACTIVE_LABEL)
        folded = len(TURNS) - len(turns)
        # Every folded turn's first sentence is in the running summary, oldest first.
        for n in range(folded):
            assert f"- {first_sentence(TURNS[n])}" in summary["content"]
        assert "It was reviewed" not in summary["content"]
        (_, pending), = await context.pending_folds([("project", "proj-mem")])
        assert pending == []
        summaries = [e for e in read_memory_topic(s) if e["kind"] == "summary"]
        assert summaries and summaries[-1]["content"] == summary["content"]
        assert summaries[-1]["memory_id"] == f"project:proj-mem:summary:{summary['seq']}"
        assert summaries[-1]["tokens"] == counter.count(summary["content"]) <= 400
        assert {e["speaker"] for e in summaries} == {"memory"}  # offline: no LLM wrote it

        # Replaying the whole log (a fresh processor group reads it again) changes nothing and
        # produces no new summaries.
        before = await snapshot(context, "proj-mem")
        produce(s, [memory_event(s.kafka.topic_prefix, n, t, tokens=counter.count(t)) for n, t in enumerate(TURNS)])
        async with running(s, ["memory"], name="replay"):
            await asyncio.sleep(3)
        assert await snapshot(context, "proj-mem") == before
        assert len([e for e in read_memory_topic(s) if e["kind"] == "summary"]) == len(summaries)
    finally:
        await delete_prefix(context.redis, s.kafka.topic_prefix)
        await context.aclose()


async def _last_turn_applied(context: RedisContext, scope_id: str, memory_id: str) -> bool:
    window = await context.read("project", scope_id)
    return bool(window.turns) and window.turns[-1]["memory_id"] == memory_id and window.summary is not None


def _end_offsets(settings: Settings, topic: str) -> list[int]:
    from confluent_kafka import TopicPartition

    from aios.streams.kafka import make_consumer

    consumer = make_consumer(settings, group="offsets-probe")
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in sorted(parts)]
    finally:
        consumer.close()


def test_a_live_redis_is_needed(settings: Settings) -> None:
    assert redis.Redis.from_url(settings.stores.redis_url).ping()
    assert json.loads("[]") == []
