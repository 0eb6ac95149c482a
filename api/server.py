"""Serving the API with uvicorn: alone (``aios api``) or in a caller's event loop (tests, benches)."""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from contextlib import contextmanager
from typing import Any

import uvicorn

from aios.api.app import create_app
from aios.api.services import StoreFactory
from aios.schemas.errors import ConfigError
from aios.streams.settings import Settings

GRACEFUL_SHUTDOWN_S = 3


def uvicorn_config(settings: Settings, *, store: StoreFactory | None = None, **extra: Any) -> uvicorn.Config:
    """uvicorn's config with the API's address and TLS settings."""
    cert, key = settings.api.tls_certfile, settings.api.tls_keyfile
    if (cert is None) != (key is None):
        raise ConfigError("TLS needs both AIOS_API_TLS_CERTFILE and AIOS_API_TLS_KEYFILE (or neither)")
    for path in (cert, key):
        if path is not None and not path.is_file():
            raise ConfigError(f"TLS file {path} does not exist; check AIOS_API_TLS_CERTFILE/KEYFILE")
    return uvicorn.Config(
        create_app(settings, store=store), host=settings.api.host, port=settings.api.port,
        ssl_certfile=str(cert) if cert else None, ssl_keyfile=str(key) if key else None,
        log_level="warning", access_log=False, server_header=False, lifespan="on",
        # Open WebSocket sessions get this long to close on shutdown, then they are cut: a
        # dashboard left open must not hold a stopping process (issue 16 §4).
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, **extra)


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its host process."""

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def serve_embedded(settings: Settings, *, store: StoreFactory | None = None) -> tuple[EmbeddedServer,
                                                                                             asyncio.Task[None]]:
    """Start the API in the running loop; return the server (``should_exit = True`` stops it) and its task."""
    server = EmbeddedServer(uvicorn_config(settings, store=store))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # raises the start-up error
            raise ConfigError(f"the API did not start on {settings.api.host}:{settings.api.port}")
        await asyncio.sleep(0.05)
    return server, task
