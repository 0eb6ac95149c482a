"""``aios bench a2a``: what the A2A door costs beside the REST door, for the same work in the same run.

Each task goes through Kafka, the orchestrator, an agent (the offline model: the LLM costs nothing,
so the platform's own latency shows) and the results committer. Four runs of ``tasks`` each, with
``concurrency`` callers:

- submit: ``POST /v1/tasks`` until its 202, beside A2A ``SendMessage`` with ``returnImmediately``
  (which also waits for the API's live view to hold the task);
- round trip: ``POST /v1/tasks`` then ``GET /v1/tasks/{id}`` every ``poll_ms`` until it has ended
  (what a REST client does), beside one blocking A2A ``SendMessage`` (answered from the live view).

The pipeline and the API run in this process, in one event loop with the load (httpx for both
doors, so the client's cost is the same on each side).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

import httpx
import redis.asyncio as aioredis

from aios.api.server import serve_embedded
from aios.bench.toolkit import latency_figures, scratch_topics
from aios.connectors.context.keys import KeyStore
from aios.streams.errors import OrchestrationError
from aios.streams.pipeline import running
from aios.streams.settings import Settings

PROCESSORS = ["orchestrator", "results", "agents"]


@dataclass(frozen=True)
class Figures:
    count: int
    seconds: float
    per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float


def _figures(latencies: list[float], seconds: float) -> Figures:
    p50, p99, top = latency_figures(latencies)
    return Figures(len(latencies), round(seconds, 3), round(len(latencies) / seconds, 1) if seconds else 0.0,
                   round(p50, 2), round(p99, 2), round(top, 2))


async def _run(count: int, concurrency: int, one: Callable[[int], Awaitable[None]],
               tick: Callable[[int], None]) -> Figures:
    latencies: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)

    async def caller() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            started = time.perf_counter()
            await one(i)
            latencies.append((time.perf_counter() - started) * 1000)
            tick(1)

    began = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return _figures(latencies, time.perf_counter() - began)


def _send(text: str, *, immediately: bool) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": uuid.uuid4().hex, "method": "SendMessage", "params": {
        "message": {"messageId": uuid.uuid4().hex, "role": "ROLE_USER", "parts": [{"text": text}],
                    "contextId": "bench"},
        "configuration": {"returnImmediately": immediately}}}


async def _doors(api: httpx.AsyncClient, role: str, tasks: int, concurrency: int, poll_s: float,
                 tick: Callable[[int], None]) -> dict[str, Figures]:
    async def rest_submit(i: int) -> str:
        r = await api.post("/v1/tasks", json={"description": f"bench task {i}", "project": "bench", "role": role})
        if r.status_code != 202:
            raise OrchestrationError(f"POST /v1/tasks answered {r.status_code}: {r.text}")
        return str(r.json()["task_id"])

    async def rest_round_trip(i: int) -> None:
        task_id = await rest_submit(i)
        while True:
            r = await api.get(f"/v1/tasks/{task_id}", params={"project": "bench"})
            if r.status_code == 200 and r.json()["state"] in ("succeeded", "failed", "cancelled", "skipped"):
                return
            await asyncio.sleep(poll_s)

    async def a2a(i: int, immediately: bool) -> None:
        r = await api.post(f"/v1/a2a/{role}", json=_send(f"bench task {i}", immediately=immediately),
                           headers={"A2A-Version": "1.0"})
        body = r.json()
        if "error" in body:
            raise OrchestrationError(f"A2A SendMessage answered an error: {body['error']}")
        state = body["result"]["task"]["status"]["state"]
        if not immediately and state != "TASK_STATE_COMPLETED":
            raise OrchestrationError(f"A2A SendMessage answered the task {state}")

    async def submit_only(i: int) -> None:
        await rest_submit(i)

    async def a2a_submit(i: int) -> None:
        await a2a(i, True)

    async def a2a_round_trip(i: int) -> None:
        await a2a(i, False)

    await _run(min(20, tasks), concurrency, rest_round_trip, lambda _: None)  # warm-up: connections, caches
    await _run(min(20, tasks), concurrency, a2a_round_trip, lambda _: None)
    return {
        "rest_submit": await _run(tasks, concurrency, submit_only, tick),
        "a2a_submit": await _run(tasks, concurrency, a2a_submit, tick),
        "rest_round_trip": await _run(tasks, concurrency, rest_round_trip, tick),
        "a2a_round_trip": await _run(tasks, concurrency, a2a_round_trip, tick),
    }


def bench_a2a(base: Settings, *, tasks: int, concurrency: int, poll_ms: int,
              tick: Callable[[int], None]) -> dict[str, Any]:
    with scratch_topics(base.replace(llm="offline:echo", api_port=0, api_rate_per_s=1e6, api_rate_burst=1_000_000,
                                     metrics_port=0), "bencha2a") as settings:
        async def run() -> dict[str, Figures]:
            async with running(settings, PROCESSORS):
                server, serving = await serve_embedded(settings)
                try:
                    redis = aioredis.Redis.from_url(settings.stores.redis_url)
                    try:
                        key, _ = await KeyStore(redis, settings.kafka.topic_prefix).create("admin", ["*"], name="bench")
                    finally:
                        await redis.aclose()
                    port = server.servers[0].sockets[0].getsockname()[1]
                    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120,
                                                 headers={"Authorization": f"Bearer {key}"}) as api:
                        return await _doors(api, settings.processing.roles[0], tasks, concurrency, poll_ms / 1000,
                                            tick)
                finally:
                    server.should_exit = True
                    await serving

        runs = asyncio.run(run())
    return {"kafka": settings.kafka.bootstrap, "cpus": os.cpu_count(), "load_average": os.getloadavg()[0],
            "tasks": tasks, "concurrency": concurrency, "poll_ms": poll_ms,
            **{name: asdict(f) for name, f in runs.items()},
            "a2a_over_rest_round_trip_p50": round(runs["a2a_round_trip"].p50_ms / runs["rest_round_trip"].p50_ms, 3)}
