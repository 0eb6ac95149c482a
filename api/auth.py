"""Authentication for every route but the health checks, and for the WebSocket.

``Authorization: Bearer <API key or JWT>``; a WebSocket may pass ``?access_token=`` instead, since
browsers cannot set headers on one. The principal lands on ``request.state.principal``.
"""

from __future__ import annotations

from fastapi import Request
from starlette.requests import HTTPConnection

from api.errors import NotAuthenticated
from api.jwt_auth import JwtVerifier
from api.keys import KeyStore, looks_like_key
from api.principal import Principal


class Authenticator:
    def __init__(self, keys: KeyStore, jwt: JwtVerifier | None) -> None:
        self.keys = keys
        self.jwt = jwt

    async def authenticate(self, token: str | None) -> Principal:
        if not token:
            raise NotAuthenticated("authentication required: send 'Authorization: Bearer <API key or token>'",
                                   headers={"WWW-Authenticate": "Bearer"})
        if looks_like_key(token):
            return await self.keys.authenticate(token)
        if self.jwt is None:
            raise NotAuthenticated("this API accepts API keys only (AIOS_API_JWKS_URL is not set)",
                                   headers={"WWW-Authenticate": "Bearer"})
        return await self.jwt.authenticate(token)


def bearer(conn: HTTPConnection, *, allow_query: bool = False) -> str | None:
    header = conn.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if allow_query:
        return conn.query_params.get("access_token")
    return None


async def authenticated(request: Request) -> Principal:
    """The route dependency: authenticate, then apply the caller's rate limit."""
    services = request.app.state.services
    principal: Principal = await services.auth.authenticate(bearer(request))
    await services.limiter.check(principal)
    request.state.principal = principal
    return principal
