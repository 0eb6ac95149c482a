"""What an MCP tool call costs AIOS, over stdio and Streamable HTTP, against the journal's replay of
one and an in-process tool in the same run (agents/mcp/echo_server.py answers at once)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aios.agents.mcp.client import McpConnection
from aios.agents.mcp.config import McpServerConfig
from aios.bench.toolkit import percentile
from aios.connectors.context.journal import LlmJournal
from aios.streams.settings import Settings

SERVER = [sys.executable, "-m", "aios.agents.mcp.echo_server"]


async def _timed(one: Callable[[], Awaitable[Any]], calls: int, concurrency: int,
                 tick: Callable[[int], None] | None) -> dict[str, float]:
    """p50/p99 latency (ms) and calls/s of ``calls`` calls, ``concurrency`` at a time."""
    latencies: list[float] = []
    gate = asyncio.Semaphore(concurrency)

    async def timed() -> None:
        async with gate:
            start = time.perf_counter()
            await one()
            latencies.append((time.perf_counter() - start) * 1000)
            if tick is not None:
                tick(1)

    start = time.perf_counter()
    await asyncio.gather(*(timed() for _ in range(calls)))
    wall = time.perf_counter() - start
    return {"p50_ms": round(percentile(latencies, 50), 3), "p99_ms": round(percentile(latencies, 99), 3),
            "calls_per_s": round(calls / wall, 1)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _http_server() -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen([*SERVER, "http", str(port)], stdout=subprocess.DEVNULL,  # noqa: S603
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"http://127.0.0.1:{port}/mcp"
        await asyncio.sleep(0.1)
    proc.kill()
    raise RuntimeError("the echo MCP server did not listen within 60s")


async def bench_mcp_async(settings: Settings, calls: int, concurrency: int,
                          tick: Callable[[int], None] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"calls": calls, "concurrency": concurrency}

    async def local_tool() -> str:  # the baseline: a tool that never leaves the process
        await asyncio.sleep(0)
        return "pong"

    doc["in_process_tool"] = {"one_at_a_time": await _timed(local_tool, calls, 1, tick),
                              "concurrent": await _timed(local_tool, calls, concurrency, tick)}
    http, url = await _http_server()
    try:
        for transport in ("stdio", "http"):
            config = (McpServerConfig("bench", "bench", "stdio", command=SERVER[0], args=tuple(SERVER[1:] + ["stdio"]))
                      if transport == "stdio" else McpServerConfig("bench", "bench", "http", url=url))
            connection = McpConnection(config, connect_timeout_s=60, call_timeout_s=30)
            try:
                start = time.perf_counter()
                await connection.open()
                connect_ms = (time.perf_counter() - start) * 1000

                async def call() -> None:
                    await connection.call("echo", {"text": "ping"})  # noqa: B023 - awaited within the loop

                doc[transport] = {"connect_ms": round(connect_ms, 1),
                                  "one_at_a_time": await _timed(call, calls, 1, tick),
                                  "concurrent": await _timed(call, calls, concurrency, tick)}
            finally:
                await connection.aclose()
    finally:
        http.kill()
        http.wait(10)
    # A replayed call: one Redis GET of the journaled result instead of the server.
    journal = LlmJournal.from_url(settings.stores.redis_url, prefix=f"bench-{uuid.uuid4().hex[:8]}", ttl_s=60)
    try:
        await journal.put("p/t#tool0", 1, 0, {"text": "ping", "call": {"name": "bench__echo", "arguments": {}}})

        async def replay() -> None:
            await journal.get("p/t#tool0", 1, 0)

        doc["journal_replay"] = {"one_at_a_time": await _timed(replay, calls, 1, tick),
                                 "concurrent": await _timed(replay, calls, concurrency, tick)}
    finally:
        await journal.aclose()
    return doc


def bench_mcp(settings: Settings, *, calls: int, concurrency: int,
              tick: Callable[[int], None] | None = None) -> dict[str, Any]:
    return asyncio.run(bench_mcp_async(settings, calls, concurrency, tick))
