"""The live WebSocket: events decoded from the topics and filtered on the server, authentication and
project scope, a slow client closed with 4008 without slowing anyone, and resume by id or time."""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from aios.streams.kafka import EventProducer
from aios.streams.readmodels.task_client import build_task
from aios.streams.settings import Settings
from aios.streams.topics import Topics
from tests.integration.api.helpers import api_client, key_headers

pytestmark = pytest.mark.integration


def ws_url(api: httpx.AsyncClient, query: str) -> str:
    return f"ws://{api.base_url.host}:{api.base_url.port}/v1/stream?{query}"


async def collect(ws: ClientConnection, n: int, timeout_s: float = 30) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout_s):
        while len(out) < n:
            out.append(json.loads(await ws.recv()))
    return out


def produce_tasks(settings: Settings, project: str, n: int, size: int = 16, per_s: float = 0) -> list[str]:
    producer = EventProducer(settings)
    ids = []
    for i in range(n):
        if per_s and i % 50 == 0:
            producer.flush()
            time.sleep(50 / per_s)
        task = build_task(os.urandom(size).hex(), project=project)
        producer.send(Topics.from_settings(settings).tasks, "Task", task, key=project)
        ids.append(task["task_id"])
    producer.flush()
    return ids


async def test_events_are_filtered_by_project_and_type(settings: Settings) -> None:
    async with api_client(settings) as api:
        admin = await key_headers(api)
        viewer = (await key_headers(api, "viewer", ("P",)))["Authorization"].split()[1]
        async with connect(ws_url(api, f"project=P&types=tasks&access_token={viewer}")) as ws:
            await asyncio.sleep(0.2)
            for project in ("Q", "P", "Q", "P"):
                r = await api.post("/v1/tasks", json={"description": f"for {project}", "project": project}, headers=admin)
                assert r.status_code == 202
            events = await collect(ws, 2)
            assert [e["data"]["description"] for e in events] == ["for P", "for P"]
            assert all(e["type"] == "tasks" and e["project_id"] == "P" for e in events)
            assert events[0]["id"].startswith(f"{settings.kafka.topic_prefix}.tasks:")
            with pytest.raises(TimeoutError):
                await collect(ws, 1, timeout_s=1.5)  # Q's tasks never arrive


async def test_live_tokens_of_one_task_on_request_only(settings: Settings) -> None:
    topics = Topics.from_settings(settings)
    producer = EventProducer(settings)

    def token(task: str, seq: int, text: str) -> dict[str, Any]:
        return {**build_task("x", project="P"), "task_id": task, "project_id": "P", "attempt": 1, "step": 0,
                "seq": seq, "text": text, "done": False, "agent_id": "a1"}

    async with api_client(settings) as api:
        viewer = (await key_headers(api, "viewer", ("P",)))["Authorization"].split()[1]
        async with connect(ws_url(api, f"project=P&task=t1&types=tokens&access_token={viewer}")) as mine, \
                connect(ws_url(api, f"project=P&access_token={viewer}")) as everything:
            await asyncio.sleep(0.3)
            for seq, (task, text) in enumerate([("t1", "Hello "), ("t2", "other "), ("t1", "world")]):
                value = {k: v for k, v in token(task, seq, text).items()
                         if k in ("event_id", "timestamp", "trace_id", "task_id", "project_id", "attempt", "step",
                                  "seq", "text", "done", "agent_id")}
                producer.send(topics.tokens, "TokenDelta", value, key=task)
            producer.flush()
            events = await collect(mine, 2)
            assert [(e["type"], e["data"]["text"]) for e in events] == [("tokens", "Hello "), ("tokens", "world")]
            with pytest.raises(TimeoutError):
                await collect(everything, 1, timeout_s=1.5)  # tokens are opt-in: not in the default types


@pytest.mark.parametrize(("query", "code"), [
    ("project=P", 4401),  # no credential
    ("project=B&access_token={viewer}", 4403),  # another project
    ("project=P&types=tasks,bogus&access_token={viewer}", 4400),
    ("project=P&from_id=nonsense&access_token={viewer}", 4400),
])
async def test_the_stream_needs_a_credential_for_the_project(settings: Settings, query: str, code: int) -> None:
    async with api_client(settings) as api:
        viewer = (await key_headers(api, "viewer", ("P",)))["Authorization"].split()[1]
        async with connect(ws_url(api, query.format(viewer=viewer))) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == code


async def test_a_slow_client_is_closed_and_never_slows_a_fast_one(settings: Settings) -> None:
    # 3,000 events of ~8 kB at 1,000/s: the fast client keeps up; the slow one's socket buffers fill,
    # then its queue of 1,000 (the view hands over batches of up to 500).
    n = 3000
    s = settings.replace(api_ws_queue=1000)
    async with api_client(s) as api:
        token = (await key_headers(api))["Authorization"].split()[1]
        query = f"types=tasks&access_token={token}"
        # The slow client reads nothing: its 1-message buffer fills, then TCP's, then its server queue.
        async with connect(ws_url(api, query), max_queue=1, compression=None) as slow, \
                connect(ws_url(api, query), compression=None) as fast:
            await asyncio.sleep(0.2)
            started = time.monotonic()
            producing = asyncio.create_task(asyncio.to_thread(produce_tasks, s, "load", n, 4096, 1000))
            received = await collect(fast, n, timeout_s=60)
            await producing
            elapsed = time.monotonic() - started
            assert len({e["id"] for e in received}) == n
            got = 0
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(slow.recv(), 10)
                    got += 1
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4008
            assert "too slow" in closed.value.rcvd.reason and got < n
        assert api.app_state.services.hub.dropped == 1  # type: ignore[attr-defined]
    print(f"fast client: {n} events in {elapsed:.1f}s; slow client closed after {got}")


async def test_resume_from_an_event_id_or_a_time(settings: Settings) -> None:
    async with api_client(settings) as api:
        token = (await key_headers(api, "viewer", ("R",)))["Authorization"].split()[1]
        before = int(time.time() * 1000)
        first = await asyncio.to_thread(produce_tasks, settings, "R", 3)
        await asyncio.sleep(1.0)
        async with connect(ws_url(api, f"project=R&types=tasks&from_ts={before}&access_token={token}")) as ws:
            replayed = await collect(ws, 3)
            assert sorted(e["data"]["task_id"] for e in replayed) == sorted(first)
            later = await asyncio.to_thread(produce_tasks, settings, "R", 2)
            live = await collect(ws, 2)
            assert sorted(e["data"]["task_id"] for e in live) == sorted(later)
        # Tasks of one project share a partition (keyed by project): resuming after the first of
        # them yields exactly the ones after it.
        by_offset = sorted(replayed + live, key=lambda e: int(e["id"].rsplit(":", 1)[1]))
        after = by_offset[0]["id"]
        async with connect(ws_url(api, f"project=R&types=tasks&from_id={after}&access_token={token}")) as ws:
            resumed = await collect(ws, 4)
            assert [e["id"] for e in resumed] == [e["id"] for e in by_offset[1:]]
            with pytest.raises(TimeoutError):
                await collect(ws, 1, timeout_s=1.0)
