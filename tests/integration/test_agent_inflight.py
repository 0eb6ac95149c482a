"""The agent worker with many assignments in flight, against the latency-simulating LLM server:
the window bounds the calls and pauses fetching, every assignment is answered and committed, a
provider that hangs or answers 429 frees its slot, Redis going down mid-task holds the assignment
(no second LLM call once it is back), a cancel closes the call's stream, and live tokens stream."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import TopicPartition
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from pydantic import SecretStr

from aios.agents.llm.servers.latency import LatencyProfile, LatencyServer
from aios.schemas.events import envelope
from aios.schemas.limits import MAX_ATTEMPT
from aios.streams.kafka import EventProducer, TopicReader, make_consumer
from aios.streams.pipeline import running
from aios.streams.settings import Settings
from tests.integration.local_servers import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def llm() -> Iterator[LatencyServer]:
    with LatencyServer(LatencyProfile(ttft_s=0.5, stream_s=0.2, tokens=10)) as server:
        yield server


def with_llm(settings: Settings, server: LatencyServer, **more: Any) -> Settings:
    return settings.replace(llm="openai:gpt-4o-mini", openai_api_key=SecretStr("sk-test"),
                            openai_base_url=server.base_url, llm_max_retries=0, **more)


def assignments(settings: Settings, count: int, project: str = "inflight") -> list[str]:
    producer = EventProducer(settings)
    ids = []
    for i in range(count):
        task_id = f"t{i}-{uuid.uuid4().hex[:6]}"
        producer.send(f"{settings.kafka.topic_prefix}.agent.general", "Assignment", {
            **envelope(), "task_id": task_id, "project_id": project, "role": "general",
            "description": f"Summarise item {i}", "attempt": 1, "context": {}, "submitted_at": envelope()["timestamp"]},
            key=task_id)
        ids.append(task_id)
    producer.flush()
    return ids


def read(settings: Settings, topic: str, timeout_s: float = 1.0) -> list[dict[str, Any]]:
    reader = TopicReader(settings, f"{settings.kafka.topic_prefix}.{topic}", from_beginning=True)
    try:
        return [d.value for _, d in reader.events(timeout_s=timeout_s) if not isinstance(d, Exception)]
    finally:
        reader.close()


async def outcomes(settings: Settings, want: int, timeout_s: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        done = [a for a in await asyncio.to_thread(read, settings, "attempts") if a["status"] != "started"]
        if len(done) >= want or time.monotonic() > deadline:
            return done
        await asyncio.sleep(0.3)


def committed(settings: Settings) -> int:
    consumer = make_consumer(settings, group=f"{settings.kafka.topic_prefix}-agents")
    topic = f"{settings.kafka.topic_prefix}.agent.general"
    try:
        offsets = consumer.committed([TopicPartition(topic, p) for p in range(settings.kafka.topic_partitions)],
                                     timeout=10)
    finally:
        consumer.close()
    return sum(max(tp.offset, 0) for tp in offsets)


async def test_a_full_window_pauses_fetching_and_every_assignment_is_answered_and_committed(
        settings: Settings, llm: LatencyServer) -> None:
    s = with_llm(settings, llm, agent_max_in_flight=40, heartbeat_interval_s=0.3)
    async with running(s, ["agents"]) as live:
        ids = await asyncio.to_thread(assignments, s, 120)
        done = await outcomes(s, 120)
        worker = next(x for x in live.runtime.services if getattr(x, "name", "") == "agents")
        assert worker.paused or worker.max_in_flight == 40
    assert sorted(a["task_id"] for a in done) == sorted(ids)
    assert {a["status"] for a in done} == {"succeeded"}
    assert llm.stats.peak_in_flight == 40, "the window bounds the calls in flight, and fills"
    assert llm.stats.calls == 120
    assert committed(s) == 120, "the drain commits every finished assignment"
    beats = [x for x in read(s, "agents") if x["state"] == "busy"]
    assert len(beats) >= 3 and max(len(b["in_flight"]) for b in beats) <= 40, "heartbeats went on, in_flight listed"


async def test_a_window_of_slow_calls_does_not_hold_the_heartbeat_or_the_drain(
        settings: Settings, llm: LatencyServer) -> None:
    llm.set_profile(ttft_s=30.0)
    s = with_llm(settings, llm, agent_max_in_flight=20, heartbeat_interval_s=0.3, drain_timeout_s=1.0,
                 llm_timeout_s=60.0)
    async with running(s, ["agents"]):
        await asyncio.to_thread(assignments, s, 30)
        await asyncio.sleep(2.5)
        started = time.monotonic()
    drain_s = time.monotonic() - started
    assert drain_s < 5, f"the drain took {drain_s:.1f}s with a timeout of 1s"
    every = read(s, "agents")
    beats = [x for x in every if x["state"] == "busy"]
    gaps = [(b["timestamp"] - a["timestamp"]).total_seconds() for a, b in zip(beats, beats[1:], strict=False)]
    assert len(beats) >= 5 and max(gaps) < 1.0, f"heartbeats every 0.3s while 20 calls hang: {gaps}"
    assert llm.stats.peak_in_flight == 20
    assert committed(s) == 0, "nothing finished: nothing committed, all 30 are for the next worker"


async def test_a_provider_that_hangs_holds_a_slot_only_until_the_timeout(settings: Settings, llm: LatencyServer) -> None:
    llm.set_profile(ttft_s=60.0)
    s = with_llm(settings, llm, agent_max_in_flight=1, llm_timeout_s=1.0)
    async with running(s, ["agents"]):
        started = time.monotonic()
        ids = await asyncio.to_thread(assignments, s, 2)
        done = await outcomes(s, 2, timeout_s=30)
        took = time.monotonic() - started
    assert sorted(a["task_id"] for a in done) == sorted(ids)
    assert {a["error_type"] for a in done} == {"ProviderTimeoutError"}
    assert took < 8, f"two hanging calls one after the other, 1s each, took {took:.1f}s"
    assert llm.stats.closed_early == 2, "the timed-out calls' connections were closed"


async def test_a_provider_that_answers_429_to_everything_loses_no_assignment(
        settings: Settings, llm: LatencyServer) -> None:
    llm.set_profile(rate_limit_rate=1.0, retry_after_s=0.1)
    s = with_llm(settings, llm, agent_max_in_flight=8)
    async with running(s, ["agents"]):
        ids = await asyncio.to_thread(assignments, s, 20)
        done = await outcomes(s, 20)
    assert sorted(a["task_id"] for a in done) == sorted(ids)
    # A retryable failure: the orchestrator tries again after its backoff (the router's cooling is its own).
    assert {a["error_type"] for a in done} == {"RateLimitError"}
    assert committed(s) == 20


class RedisProcess:
    """A redis-server of the test's own, to stop and start again on the same port."""

    def __init__(self, directory: Path) -> None:
        self.port, self.directory = free_port(), directory
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (make system)"
        self.proc = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",  # noqa: S603
                                      "--appendonly", "no", "--dir", str(self.directory)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if redis.Redis.from_url(self.url, socket_timeout=0.5).ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise AssertionError("the test's redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


async def test_redis_down_mid_task_holds_the_assignment_then_finishes_without_a_second_llm_call(
        settings: Settings, llm: LatencyServer, tmp_path: Path) -> None:
    redis_server = RedisProcess(tmp_path)
    redis_server.start()
    llm.set_profile(ttft_s=1.5)
    s = with_llm(settings, llm, redis_url=redis_server.url, agent_max_in_flight=4, commit_interval_s=0.2)
    try:
        async with running(s, ["agents"]):
            [task_id] = await asyncio.to_thread(assignments, s, 1)
            while llm.stats.calls == 0:
                await asyncio.sleep(0.05)
            redis_server.stop()  # the call is in flight: its answer cannot be journaled now
            await asyncio.sleep(3.0)
            assert not await outcomes(s, 1, timeout_s=0), "no outcome while Redis is down"
            assert committed(s) == 0, "the assignment is held in flight, not acknowledged"
            redis_server.start()
            done = await outcomes(s, 1, timeout_s=30)
    finally:
        redis_server.stop()
    assert [(a["task_id"], a["status"]) for a in done] == [(task_id, "succeeded")]
    assert llm.stats.calls == 1, "the answer waited for the journal: the LLM was not called again"
    assert committed(s) == 1


async def test_a_cancel_closes_the_running_call_and_no_call_starts_after_it(
        settings: Settings, llm: LatencyServer) -> None:
    llm.set_profile(ttft_s=20.0)
    s = with_llm(settings, llm, agent_max_in_flight=8, llm_timeout_s=60.0)
    producer = EventProducer(s)
    async with running(s, ["agents"]):
        [task_id] = await asyncio.to_thread(assignments, s, 1, "doomed")
        while llm.stats.in_flight == 0:
            await asyncio.sleep(0.02)
        asked = time.monotonic()
        producer.send(f"{s.kafka.topic_prefix}.control", "Control", {
            **envelope(), "project_id": "doomed", "action": "cancel", "task_id": None, "reason": "changed my mind",
            "requested_by": "test"}, key="doomed")
        producer.flush()
        while llm.stats.closed_early == 0 and time.monotonic() - asked < 5:
            await asyncio.sleep(0.005)
        latency_s = time.monotonic() - asked
        done = await outcomes(s, 1)
        # A later assignment of the cancelled project is not started at all.
        [late] = await asyncio.to_thread(assignments, s, 1, "doomed")
        done = await outcomes(s, 2)
    print(f"cancel latency: {latency_s * 1000:.0f} ms (control event produced -> the server saw the close)")
    assert latency_s < 1.0, f"the stream closed {latency_s:.2f}s after the cancel"
    assert llm.stats.closed_early == 1 and llm.stats.calls == 1, "no call started after the cancel"
    by_task = {a["task_id"]: a for a in done}
    assert by_task[task_id]["status"] == "cancelled" and "changed my mind" in by_task[task_id]["error"]
    assert by_task[late]["status"] == "cancelled"


async def test_live_tokens_are_coalesced_and_add_up_to_the_answer(settings: Settings, llm: LatencyServer) -> None:
    llm.set_profile(ttft_s=0.2, stream_s=1.0, tokens=40)
    s = with_llm(settings, llm, token_interval_ms=100)
    async with running(s, ["agents"]):
        [task_id] = await asyncio.to_thread(assignments, s, 1)
        [done] = await outcomes(s, 1)
        await asyncio.sleep(0.5)
    tokens = [t for t in read(s, "tokens") if t["task_id"] == task_id]
    assert done["status"] == "succeeded"
    assert "".join(t["text"] for t in sorted(tokens, key=lambda t: t["seq"])) == done["output"]
    assert tokens[-1]["done"] and not any(t["done"] for t in tokens[:-1])
    # 40 deltas over ~1 s (longer on a loaded machine): coalesced into far fewer events, and the
    # rule itself, at most one event per 100 ms, is the gaps' check below.
    assert 6 <= len(tokens) <= 20, f"40 deltas over about 1s, at most one event per 100 ms: {len(tokens)} events"
    stamps = sorted(t["timestamp"] for t in tokens[:-1])
    gaps = [(b - a).total_seconds() for a, b in zip(stamps, stamps[1:], strict=False)]
    assert min(gaps) >= 0.09, gaps


async def test_a_spent_budget_cancels_the_call_still_running(settings: Settings) -> None:
    from aios.agents.llm.servers.openai import FakeOpenAI, ok, slow_first_token
    from aios.streams.orchestration.plan import parse_plan
    from aios.streams.readmodels.task_client import TaskClient, wait_project

    with FakeOpenAI() as server:
        # Whichever of the two calls arrives first answers at once and spends the budget; the other
        # waits 30 s for its first token, and must be stopped rather than paid for.
        server.script(ok("cheap and quick"), slow_first_token(30.0, "never needed"))
        s = settings.replace(llm="openai:gpt-4o-mini", openai_api_key=SecretStr("sk-test"),
                             openai_base_url=server.base_url, llm_max_retries=0, llm_timeout_s=60.0)
        plan = parse_plan('{"project": "thrifty", "budget_usd": 1e-9, "tasks": ['
                          '{"id": "a", "role": "general", "description": "one"},'
                          '{"id": "b", "role": "general", "description": "two"}]}', s.processing.roles)
        async with running(s, ["orchestrator", "results", "agents"]):
            client = TaskClient(s)
            try:
                client.submit_plan(plan)
            finally:
                client.close()
            started = time.monotonic()
            final = await asyncio.to_thread(wait_project, s, "thrifty", 40)
            took = time.monotonic() - started
    assert final["state"] == "cancelled", final
    assert took < 20, f"the slow call was not stopped: the project took {took:.1f}s"
    done = {a["task_id"]: a for a in read(s, "attempts") if a["status"] != "started"}
    assert sorted(a["status"] for a in done.values()) == ["cancelled", "succeeded"]
    cancelled = next(a for a in done.values() if a["status"] == "cancelled")
    assert "budget" in (cancelled["error"] or "")
    [control] = read(s, "control")
    assert control["requested_by"] == "orchestrator" and "budget" in control["reason"]


@hyp_settings(max_examples=1, deadline=None, suppress_health_check=list(HealthCheck))
@given(garbage=st.lists(st.binary(max_size=300), min_size=15, max_size=15),
       descriptions=st.lists(st.text(min_size=1, max_size=3000), min_size=5, max_size=5))
def test_hostile_records_are_dead_lettered_and_the_worker_goes_on(settings: Settings, garbage: list[bytes],
                                                                   descriptions: list[str]) -> None:
    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        topic = f"{settings.kafka.topic_prefix}.agent.general"
        async with running(settings, ["agents"]):
            producer = EventProducer(settings)
            for raw in garbage:
                producer.send_raw(topic, b"\xc3\x01" + raw if len(raw) % 2 else raw, key="junk")
            # Schema-valid and within the limits, however odd: work like any other.
            odd = [{**envelope(), "task_id": f"odd-{i}", "project_id": "p.q", "role": "general",
                    "description": f"odd {text}", "attempt": MAX_ATTEMPT, "context": {"dep": text * 3},
                    "submitted_at": envelope()["timestamp"]} for i, text in enumerate(descriptions)]
            # Schema-valid but outside the limits (ids with '/', NUL and a bidi override): dead letters.
            bad = [{**a, "task_id": f"odd/{i}\u202e", "project_id": "p\x00q"} for i, a in enumerate(odd)]
            for a in odd + bad:
                producer.send(topic, "Assignment", a, key=a["task_id"])
            producer.flush()
            [normal] = await asyncio.to_thread(assignments, settings, 1)
            done = await outcomes(settings, len(odd) + 1)
            assert normal in {a["task_id"] for a in done}
        return done, read(settings, "dlq")

    done, letters = asyncio.run(scenario())
    assert {a["status"] for a in done} == {"succeeded"}, "schema-valid odd input is work like any other"
    assert len(done) == len(descriptions) + 1
    assert len([d for d in letters if d["processor"] == "agents"]) == len(garbage) + len(descriptions)
    assert committed(settings) == len(garbage) + 2 * len(descriptions) + 1
