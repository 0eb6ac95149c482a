"""The owner of the local Qdrant folder: serves it over Qdrant's own REST API on loopback.

qdrant-client's local mode keeps a folder that one client may open at a time. While ``aios up``
runs, this process (``aios serve qdrant``) holds it and answers the part of Qdrant's REST API that
AIOS's vector memory uses (collections, aliases, payload indexes, upsert, query, count, scroll,
delete), with Qdrant's request and response bodies, parsed and written by qdrant-client's own
models. So the agents' recall, the memory processor and ``aios memory search`` run the same
server-mode client code (``VectorMemory.server``) as against a Qdrant server, and no protocol of
our own is involved. Local mode is not thread-safe: every call runs on one thread.
"""

from __future__ import annotations

import asyncio
import functools
import signal
import time
from collections.abc import AsyncIterator, Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from aios.connectors.local_owner import claim, live_owner, release
from aios.streams.errors import StackError
from aios.streams.settings import Settings

try:
    from qdrant_client import QdrantClient
    from qdrant_client.http import models as m
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise StackError(f"serving vector memory needs qdrant-client ({exc.name} is missing): pip install 'aios[vector]'") from exc

T = TypeVar("T")
Call = Callable[[QdrantClient], Any]


def _answer(result: Any, started: float) -> JSONResponse:
    body = result.model_dump(mode="json", exclude_none=True) if hasattr(result, "model_dump") else result
    return JSONResponse({"result": body, "status": "ok", "time": time.perf_counter() - started})


def build_app(folder: Path) -> FastAPI:
    """The REST façade over a local-mode client of ``folder`` (opened at start-up, closed at shutdown)."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aios-qdrant-owner")
    holder: dict[str, QdrantClient] = {}

    def guarded(call: Call, collection: str | None) -> tuple[int, Any]:
        client = holder["client"]
        try:
            return 200, call(client)
        except (ValueError, KeyError) as exc:  # local mode's errors for a bad request or a missing collection
            missing = collection is not None and not client.collection_exists(collection)
            return (404 if missing else 400), str(exc)

    async def run(call: Call, started: float, collection: str | None = None) -> JSONResponse:
        loop = asyncio.get_running_loop()
        status, result = await loop.run_in_executor(pool, functools.partial(guarded, call, collection))
        if status != 200:
            return JSONResponse({"status": {"error": result}, "time": time.perf_counter() - started},
                                status_code=status)
        return _answer(result, started)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        holder["client"] = await loop.run_in_executor(pool, functools.partial(QdrantClient, path=str(folder)))
        try:
            yield
        finally:
            await loop.run_in_executor(pool, holder["client"].close)
            pool.shutdown(wait=True)

    app = FastAPI(title="AIOS local Qdrant", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)

    @app.exception_handler(ValidationError)
    async def bad_body(request: Request, exc: ValidationError) -> JSONResponse:
        return JSONResponse({"status": {"error": f"bad request body: {exc.error_count()} errors: {exc.errors()[:3]}"}},
                            status_code=400)

    @app.get("/")
    async def version() -> dict[str, str]:
        return {"title": "qdrant - vector search engine (qdrant-client local mode, served by aios)",
                "version": metadata.version("qdrant-client")}

    @app.get("/healthz")
    @app.get("/readyz")
    async def healthz() -> str:
        return "ok"

    @app.get("/collections/{name}/exists")
    async def exists(name: str) -> JSONResponse:
        t = time.perf_counter()
        return await run(lambda c: m.CollectionExistence(exists=c.collection_exists(name)), t)

    @app.get("/collections/{name}")
    async def get_collection(name: str) -> JSONResponse:
        t = time.perf_counter()
        return await run(lambda c: c.get_collection(name), t, name)

    @app.put("/collections/{name}")
    async def create_collection(name: str, request: Request) -> JSONResponse:
        t, body = time.perf_counter(), m.CreateCollection.model_validate(await request.json())
        return await run(lambda c: c.create_collection(name, vectors_config=body.vectors,
                                                       sparse_vectors_config=body.sparse_vectors), t)

    @app.delete("/collections/{name}")
    async def delete_collection(name: str) -> JSONResponse:
        t = time.perf_counter()
        return await run(lambda c: c.delete_collection(name), t, name)

    @app.put("/collections/{name}/index")
    async def create_index(name: str, request: Request) -> JSONResponse:
        t, body = time.perf_counter(), m.CreateFieldIndex.model_validate(await request.json())
        # Local mode scans exhaustively: an index is accepted and changes nothing.
        return await run(lambda c: c.create_payload_index(name, body.field_name, body.field_schema), t, name)

    @app.get("/aliases")
    async def aliases() -> JSONResponse:
        t = time.perf_counter()
        return await run(lambda c: c.get_aliases(), t)

    @app.post("/collections/aliases")
    async def change_aliases(request: Request) -> JSONResponse:
        t, body = time.perf_counter(), m.ChangeAliasesOperation.model_validate(await request.json())
        return await run(lambda c: c.update_collection_aliases(change_aliases_operations=body.actions), t)

    @app.put("/collections/{name}/points")
    async def upsert(name: str, request: Request) -> JSONResponse:
        t, raw = time.perf_counter(), await request.json()
        points: Any = (m.PointsBatch.model_validate(raw).batch if "batch" in raw
                       else m.PointsList.model_validate(raw).points)
        return await run(lambda c: c.upsert(name, points=points, wait=True), t, name)

    @app.post("/collections/{name}/points/query")
    async def query(name: str, request: Request) -> JSONResponse:
        t, q = time.perf_counter(), m.QueryRequest.model_validate(await request.json())
        return await run(lambda c: c.query_points(
            name, query=q.query, using=q.using, prefetch=q.prefetch, query_filter=q.filter, search_params=q.params,
            limit=q.limit or 10, offset=q.offset, with_payload=q.with_payload if q.with_payload is not None else False,
            with_vectors=q.with_vector or False, score_threshold=q.score_threshold), t, name)

    @app.post("/collections/{name}/points/count")
    async def count(name: str, request: Request) -> JSONResponse:
        t, q = time.perf_counter(), m.CountRequest.model_validate(await request.json())
        return await run(lambda c: c.count(name, count_filter=q.filter, exact=q.exact is not False), t, name)

    @app.post("/collections/{name}/points/scroll")
    async def scroll(name: str, request: Request) -> JSONResponse:
        t, q = time.perf_counter(), m.ScrollRequest.model_validate(await request.json())

        def page(c: QdrantClient) -> m.ScrollResult:
            points, offset = c.scroll(name, scroll_filter=q.filter, limit=q.limit or 10, offset=q.offset,
                                      with_payload=q.with_payload if q.with_payload is not None else True,
                                      with_vectors=q.with_vector or False)
            return m.ScrollResult(points=points, next_page_offset=offset)
        return await run(page, t, name)

    @app.post("/collections/{name}/points/delete")
    async def delete(name: str, request: Request) -> JSONResponse:
        t, raw = time.perf_counter(), await request.json()
        selector: Any = (m.FilterSelector.model_validate(raw).filter if "filter" in raw
                         else m.PointIdsList.model_validate(raw).points)
        return await run(lambda c: c.delete(name, points_selector=selector, wait=True), t, name)

    return app


class _Server(uvicorn.Server):
    """Signals are this process's (a clean stop exits 0, where uvicorn re-raises the signal)."""

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def url_of(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.stores.qdrant_local_port}"


def serve_qdrant(settings: Settings, on_ready: Callable[[str], None]) -> None:
    """Serve the local folder until SIGTERM or SIGINT; ``on_ready(url)`` once it answers."""
    from aios.streams.engine.runtime import qdrant_folder

    folder = qdrant_folder(settings).resolve()
    owner = live_owner(folder)
    if owner is not None:
        raise StackError(f"{folder} is already served by process {owner.pid} at {owner.url}; stop that `aios up` first")
    url = url_of(settings)
    config = uvicorn.Config(build_app(folder), host="127.0.0.1", port=settings.stores.qdrant_local_port,
                            log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=5)
    server = _Server(config)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
                raise StackError(f"the Qdrant owner could not listen on {url}: set AIOS_QDRANT_LOCAL_PORT to a free port")
            await asyncio.sleep(0.05)
        claim(folder, url)
        try:
            on_ready(url)
            await task
        finally:
            release(folder)

    asyncio.run(serve())
