"""The FastAPI application: routes, error mapping and the services' lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from redis.exceptions import RedisError

from aios.api.artifacts import artifacts_router
from aios.api.auth import AuthMiddleware, document_bearer
from aios.api.errors import ApiError
from aios.api.hardening import BodyLimit, SecurityHeaders, SingleQueryValues
from aios.api.metrics import Metrics
from aios.api.ops import ops_router, ops_ws_router
from aios.api.routes import health, router
from aios.api.routes_workers import workers
from aios.api.services import Services, StoreFactory
from aios.api.stream import ws_router
from aios.schemas.errors import AiosError, SchemaError
from aios.streams.errors import KafkaError, OrchestrationError
from aios.streams.settings import Settings

STATIC = Path(__file__).parent / "static"
log = logging.getLogger(__name__)


def create_app(settings: Settings, *, store: StoreFactory | None = None) -> FastAPI:
    """The API for ``settings``; ``store`` shares a process's history store (``aios up``)."""
    services = Services(settings, store=store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await services.start()
        try:
            yield
        finally:
            await services.close()

    app = FastAPI(title="AIOS", version="1", lifespan=lifespan,
                  description="Submit tasks and plans to the AIOS pipeline, read their state, stream events.")
    app.state.services = services
    # Outermost last: headers on every answer, the size cap, CORS (so even a 401 is readable
    # cross-origin), then authentication.
    app.add_middleware(AuthMiddleware)
    app.add_middleware(CORSMiddleware, allow_origins=list(settings.api.cors_origins), allow_credentials=False,
                       allow_methods=["GET", "POST", "DELETE"], allow_headers=["Authorization", "Content-Type"],
                       max_age=600)
    app.add_middleware(BodyLimit, limit=settings.api.max_body_bytes)
    app.add_middleware(SingleQueryValues)
    app.add_middleware(SecurityHeaders, settings=settings)
    app.add_middleware(Metrics)
    app.include_router(health)
    app.include_router(router)
    app.include_router(workers)
    app.include_router(artifacts_router)
    app.include_router(ws_router)
    app.include_router(ops_router)
    app.include_router(ops_ws_router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    if settings.api.a2a:
        _serve_a2a(app, services)

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = state_roles(document_bearer(get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes)),
                settings.processing.roles)
        return app.openapi_schema
    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RedisError)
    async def redis_error(request: Request, exc: RedisError) -> JSONResponse:
        return JSONResponse({"detail": f"Redis is unavailable: {exc}"}, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(AiosError)
    async def aios_error(request: Request, exc: AiosError) -> JSONResponse:
        # What the request holds (it breaks a limit, does not encode) is the caller's to fix; Kafka, the
        # registry or a store failing is the server's trouble.
        caller = isinstance(exc, SchemaError) or (isinstance(exc, OrchestrationError) and not isinstance(exc, KafkaError))
        if caller:
            return JSONResponse({"detail": str(exc)}, status_code=400)
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "1"})

    return app


def _serve_a2a(app: FastAPI, services: Services) -> None:
    try:
        from aios.api.a2a import mount_a2a
    except ImportError as exc:
        if not (exc.name or "").startswith(("a2a", "google")):
            raise
        # A default that needs an extra: an install without it serves the rest and says why not this.
        log.warning("the A2A endpoints are off: the a2a extra is not installed (pip install 'aios[a2a]'; "
                    "AIOS_API_A2A=0 silences this)")
        return
    mount_a2a(app, services)


def state_roles(document: dict[str, Any], roles: tuple[str, ...]) -> dict[str, Any]:
    """The OpenAPI document with every request's ``role`` limited to the roles this deployment runs,
    so a client generated from it sends no role the API would refuse."""
    for name in ("TaskIn", "ProjectIn", "PlannedTask"):
        role = document.get("components", {}).get("schemas", {}).get(name, {}).get("properties", {}).get("role")
        if role is not None:
            role["enum"] = list(roles)
    return document
