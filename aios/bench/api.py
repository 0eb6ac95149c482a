"""``aios bench api``: POST /v1/tasks requests/s and latency at a fixed rate, beside a raw
confluent-kafka producer on the same broker in the same run, and WebSocket fan-out to many clients.

The API runs as its own ``aios api`` process, as users run it. The load generator is a small
keep-alive HTTP/1.1 client on asyncio streams: httpx costs more CPU per request than the server
under test, which would measure the client. Latency is taken from each request's scheduled start
(open loop), so a stalled server cannot hide queueing (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from confluent_kafka import Producer

from aios.bench.toolkit import PipelineProcess, percentile
from aios.connectors.context.keys import KeyStore
from aios.schemas.events import now_ms
from aios.streams.errors import OrchestrationError
from aios.streams.kafka import make_codec, producer_config
from aios.streams.readmodels.task_client import build_task
from aios.streams.settings import Settings
from aios.streams.topics import Topics, create_topics, delete_topics


@dataclass
class Figures:
    requests: int
    seconds: float
    per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int


def figures(latencies: list[float], seconds: float, errors: int = 0) -> Figures:
    return Figures(len(latencies), round(seconds, 3), round(len(latencies) / seconds, 1),
                   round(percentile(latencies, 50), 2), round(percentile(latencies, 99), 2),
                   round(max(latencies, default=float("nan")), 2), errors)


# --- HTTP load ----------------------------------------------------------------------------------

class HttpLoad:
    """``connections`` keep-alive connections sending one prepared request each time they are asked."""

    def __init__(self, host: str, port: int, request: bytes, connections: int) -> None:
        self.host, self.port, self.request, self.connections = host, port, request, connections
        self.latencies: list[float] = []
        self.errors: dict[int, int] = {}

    async def _worker(self, jobs: asyncio.Queue[float | None], tick: Callable[[int], None]) -> None:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            while (scheduled := await jobs.get()) is not None:
                writer.write(self.request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                self.latencies.append((time.perf_counter() - scheduled) * 1000)
                if status != 202:
                    self.errors[status] = self.errors.get(status, 0) + 1
                tick(1)
        finally:
            writer.close()

    async def run(self, count: int, rate: float | None, tick: Callable[[int], None]) -> Figures:
        """``count`` requests at ``rate``/s on a fixed schedule, or all at once when ``rate`` is None."""
        self.latencies, self.errors = [], {}
        jobs: asyncio.Queue[float | None] = asyncio.Queue()
        workers = [asyncio.create_task(self._worker(jobs, tick)) for _ in range(self.connections)]
        start = time.perf_counter()
        for i in range(count):
            due = start + i / rate if rate else start
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            jobs.put_nowait(due)
        for _ in workers:
            jobs.put_nowait(None)
        await asyncio.gather(*workers)
        return figures(self.latencies, time.perf_counter() - start, sum(self.errors.values()))


def task_request(host: str, port: int, key: str, project: str) -> bytes:
    body = json.dumps({"description": "benchmark task: summarise the release notes", "project": project}).encode()
    return (f"POST /v1/tasks HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


# --- raw confluent-kafka baseline --------------------------------------------------------------

def raw_producer(settings: Settings, count: int, rate: float | None) -> Figures:
    """Task events (encoded once) produced idempotently with acks=all; latency to the delivery report."""
    topic = Topics.from_settings(settings).tasks
    data = make_codec(settings).encode("Task", build_task("benchmark task", project="raw"), topic)
    producer = Producer(producer_config(settings))
    producer.produce(topic, value=data, key=b"raw")  # warm-up: metadata and the idempotent producer id
    producer.flush(30)
    latencies: list[float] = []
    errors = 0

    def delivered(sent: float) -> Callable[[Any, Any], None]:
        def report(err: Any, _msg: Any) -> None:
            nonlocal errors
            latencies.append((time.perf_counter() - sent) * 1000)
            errors += err is not None
        return report

    start = time.perf_counter()
    for i in range(count):
        due = start + i / rate if rate else time.perf_counter()
        while rate and time.perf_counter() < due:
            producer.poll(min(0.001, max(0.0, due - time.perf_counter())))
        producer.produce(topic, value=data, key=b"raw", on_delivery=delivered(due))
        producer.poll(0)
    producer.flush(60)
    return figures(latencies, time.perf_counter() - start, errors)


# --- WebSocket fan-out -------------------------------------------------------------------------

async def fan_out(settings: Settings, port: int, key: str, clients: int, events: int, rate: float) -> dict[str, Any]:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    url = f"ws://127.0.0.1:{port}/v1/stream?project=fanout&types=tasks&access_token={key}"
    latencies: list[float] = []
    closed: list[int] = []
    received = [0] * clients

    async def client(i: int, ready: asyncio.Event) -> None:
        async with connect(url, compression=None, max_queue=None) as ws:
            ready.set()
            try:
                while received[i] < events:
                    msg = json.loads(await ws.recv())
                    latencies.append(time.time() * 1000 - msg["timestamp"])
                    received[i] += 1
            except ConnectionClosed as exc:  # a dropped client is a figure, not a failure
                closed.append(exc.rcvd.code if exc.rcvd is not None else -1)

    readies = [asyncio.Event() for _ in range(clients)]
    tasks = [asyncio.create_task(client(i, readies[i])) for i in range(clients)]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 60)
    await asyncio.sleep(0.5)
    start = time.perf_counter()

    def produce() -> None:
        topic = Topics.from_settings(settings).tasks
        codec = make_codec(settings)
        producer = Producer(producer_config(settings))
        t0 = time.perf_counter()
        for i in range(events):
            while time.perf_counter() < t0 + i / rate:
                producer.poll(0.001)
            task = build_task("fan-out", project="fanout")
            task["timestamp"] = now_ms()
            task["metadata"] = {"n": str(i)}
            producer.produce(topic, value=codec.encode("Task", task, topic), key=b"fanout")
            producer.poll(0)
        producer.flush(30)

    await asyncio.to_thread(produce)
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), 120)
    except TimeoutError:
        pass
    seconds = time.perf_counter() - start
    total = sum(received)
    return {"clients": clients, "events": events, "offered_rate_per_s": rate, "deliveries": total,
            "complete_clients": sum(1 for r in received if r == events), "closed": closed,
            "deliveries_per_s": round(total / seconds, 1),
            "p50_ms": round(percentile(latencies, 50), 1), "p99_ms": round(percentile(latencies, 99), 1)}


# --- the whole bench ---------------------------------------------------------------------------

async def _make_key(settings: Settings) -> str:
    client = aioredis.Redis.from_url(settings.stores.redis_url)
    try:
        key, _ = await KeyStore(client, settings.kafka.topic_prefix).create("admin", ["*"], name="bench")
        return key
    finally:
        await client.aclose()


def bench_api(base: Settings, *, requests: int, rate: float, connections: int, clients: int, events: int,
              event_rate: float, port: int, tick: Callable[[int], None]) -> dict[str, Any]:
    prefix = f"benchapi{int(time.time())}"
    settings = base.replace(topic_prefix=prefix)
    create_topics(settings)
    key = asyncio.run(_make_key(settings))
    raw_burst = raw_producer(settings, requests, None)
    raw_paced = raw_producer(settings, requests, rate)
    env = {"AIOS_API_RATE_PER_S": "1000000", "AIOS_API_RATE_BURST": "1000000", "AIOS_API_WS_QUEUE": "10000"}
    with tempfile.TemporaryDirectory(prefix="aios-bench-api-") as tmp:
        proc = PipelineProcess(settings, ["api", "--port", str(port)], Path(tmp), env_extra=env)
        try:
            proc.wait_ready()

            async def http() -> dict[str, Figures]:
                load = HttpLoad("127.0.0.1", port, task_request("127.0.0.1", port, key, "bench"), connections)
                await load.run(min(500, requests), rate, tick)  # warm-up: connections, producer, JIT-free caches
                paced = await load.run(requests, rate, tick)
                burst = await load.run(requests, None, tick)
                if load.errors:
                    raise OrchestrationError(f"the API answered errors: {load.errors}")
                return {"paced": paced, "burst": burst}
            api = asyncio.run(http())
            fan = asyncio.run(fan_out(settings, port, key, clients, events, event_rate))
        finally:
            proc.stop()
            delete_topics(settings)  # a shared broker should not keep every run's partitions
    return {
        "kafka": settings.kafka.bootstrap, "prefix": prefix, "cpus": os.cpu_count(),
        "load_average": os.getloadavg()[0], "threads": threading.active_count(),
        "api": {k: asdict(v) for k, v in api.items()},
        "raw_producer": {"paced": asdict(raw_paced), "burst": asdict(raw_burst)},
        "ratio_api_over_raw_burst": round(api["burst"].per_s / raw_burst.per_s, 4),
        "websocket": fan,
        "targets": {"requests_per_s": 1000, "p99_ms": 50},
        "connections": connections, "offered_rate_per_s": rate,
    }
