"""Authentication for every route but the health checks, and for the WebSocket.

``Authorization: Bearer <API key or JWT>``; a WebSocket may pass ``?access_token=`` instead, since
browsers cannot set headers on one. The principal lands on ``request.state.principal``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from aios.api.errors import ApiError, NotAuthenticated
from aios.api.jwt_auth import JwtVerifier
from aios.api.keys import ApiKeys, looks_like_key
from aios.api.metrics import AUTH_FAILURES
from aios.api.principal import Principal
from aios.api.ratelimit import RateLimiter

ENDED = {"expired": "token expired", "revoked": "API key revoked"}  # why a credential ended: what a client reads


class Authenticator:
    def __init__(self, keys: ApiKeys, jwt: JwtVerifier | None, limiter: RateLimiter) -> None:
        self.keys = keys
        self.jwt = jwt
        self.limiter = limiter

    async def authenticate(self, token: str | None, *, limit: bool = False) -> Principal:
        """The caller's principal; with ``limit``, its rate-limit bucket is charged as well."""
        if not token:
            raise NotAuthenticated("authentication required: send 'Authorization: Bearer <API key or token>'",
                                   headers={"WWW-Authenticate": "Bearer"})
        if looks_like_key(token):
            principal = await self.keys.authenticate(token)
        elif self.jwt is None:
            raise NotAuthenticated("this API accepts API keys only (AIOS_API_JWKS_URL is not set)",
                                   headers={"WWW-Authenticate": "Bearer"})
        else:
            principal = await self.jwt.authenticate(token)
        if limit:  # after the credential is checked: a bad guess cannot drain a real key's bucket
            await self.limiter.check(principal)
        return principal

    async def until_invalid(self, principal: Principal, recheck_s: float) -> str:
        """Return once the credential stops being valid, with why (a key of ``ENDED``): a token at
        its expiry, a key when a check (every ``recheck_s``) finds it revoked. For connections that
        outlive a request."""
        while True:
            wait = recheck_s
            if principal.expires_at is not None:
                left = principal.expires_at - time.time()
                if left <= 0:
                    return "expired"
                wait = min(wait, left)
            await asyncio.sleep(wait)
            if principal.via == "key":
                try:
                    record = await self.keys.store.get(principal.subject)
                except RedisError:
                    continue  # a Redis blip is no reason to drop a client: check again next round
                if record is None or record.revoked:
                    return "revoked"


def bearer(conn: HTTPConnection, *, allow_query: bool = False) -> str | None:
    header = conn.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if allow_query:
        return conn.query_params.get("access_token")
    return None


def principal_of(request: Request) -> Principal:
    """The principal :class:`AuthMiddleware` established for this request."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:  # a route outside /v1/ asked for it: a programming error, refused safely
        raise NotAuthenticated("authentication required", headers={"WWW-Authenticate": "Bearer"})
    return principal


def document_bearer(openapi: dict[str, Any]) -> dict[str, Any]:
    """Declare the bearer scheme, and that every /v1 operation needs it, in the OpenAPI document.

    The middleware enforces it; declaring it here (rather than through a FastAPI security
    dependency per route) keeps dependency resolution off the hot path.
    """
    openapi.setdefault("components", {}).setdefault("securitySchemes", {})["HTTPBearer"] = {
        "type": "http", "scheme": "bearer", "description": "An AIOS API key (aios_…) or an OIDC JWT."}
    for path, operations in openapi.get("paths", {}).items():
        if path.startswith("/v1/"):
            for operation in operations.values():
                operation["security"] = [{"HTTPBearer": []}]
                operation.setdefault("responses", {}).setdefault(
                    "401", {"description": "No valid credential", "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/ErrorOut"}}}})
    return openapi


class AuthMiddleware:
    """Authenticates and rate-limits every HTTP request under /v1/ before anything else reads it.

    Running ahead of routing means an unauthenticated caller learns nothing, not even whether its
    body would parse: it gets 401 (or 429 past its rate) whatever it sent.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/") or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)  # the WebSocket authenticates in its endpoint
            return
        services = scope["app"].state.services
        try:
            principal = await services.auth.authenticate(bearer(HTTPConnection(scope)), limit=True)
        except ApiError as exc:
            AUTH_FAILURES.labels(str(exc.status)).inc()
            response = JSONResponse({"detail": str(exc)}, status_code=exc.status, headers=exc.headers)
            await response(scope, receive, send)
            return
        except RedisError as exc:
            AUTH_FAILURES.labels("503").inc()
            response = JSONResponse({"detail": f"credentials cannot be checked: Redis is unavailable ({exc})"},
                                    status_code=503, headers={"Retry-After": "1"})
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)
