"""The API served in the test's event loop (real uvicorn, real sockets), and an httpx client for it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx

from aios.api.server import serve_embedded
from aios.api.services import StoreFactory
from aios.streams.settings import Settings


@asynccontextmanager
async def api_client(settings: Settings, *, store: StoreFactory | None = None,
                     as_admin: bool = False) -> AsyncIterator[httpx.AsyncClient]:
    """``as_admin``: every request carries an admin key for every project, unless it sets its own."""
    s = settings.replace(api_port=0)
    server, task = await serve_embedded(s, store=store)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            client.app_state = server.config.app.state  # type: ignore[attr-defined]
            if as_admin:
                client.headers.update(await key_headers(client, "admin", ("*",)))
            yield client
    finally:
        server.should_exit = True
        await task


async def poll(call: Callable[[], Any], until: Callable[[Any], bool], timeout_s: float = 60) -> Any:
    """Call ``call`` (async) until ``until(result)``; fail with the last result after the timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last = None
    while loop.time() < deadline:
        last = await call()
        if until(last):
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"condition not met within {timeout_s}s; last: {last!r}")


async def key_headers(api: httpx.AsyncClient, role: str = "admin", projects: tuple[str, ...] = ("*",)) -> dict[str, str]:
    """A fresh API key of ``role`` on ``projects``, as request headers."""
    key, _ = await api.app_state.services.keys.create(role, list(projects))  # type: ignore[attr-defined]
    return {"Authorization": f"Bearer {key}"}
