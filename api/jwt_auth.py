"""JWT bearer tokens checked against an OIDC JWKS: signature, issuer, audience, expiry.

PyJWT's JWKS client caches the key set and fetches it again when a token names a key id it does
not hold, which is how an identity provider's key rotation reaches us.
"""

from __future__ import annotations

import asyncio
from typing import Any

import jwt

from aios.api.errors import Forbidden, NotAuthenticated
from aios.api.principal import ALL_PROJECTS, Principal, parse_role
from aios.schemas.errors import ConfigError
from aios.streams.settings import Settings

ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]


class JwtVerifier:
    def __init__(self, settings: Settings) -> None:
        api = settings.api
        # Settings refuse a JWKS URL without both (ApiSettings); checked again where it matters.
        if not (api.jwks_url and api.jwt_issuer and api.jwt_audience):
            raise ConfigError("JWT bearer tokens need AIOS_API_JWKS_URL, AIOS_API_JWT_ISSUER and AIOS_API_JWT_AUDIENCE")
        jwks_url: str = api.jwks_url
        self.issuer: str = api.jwt_issuer
        self.audience: str = api.jwt_audience
        self.role_claim = settings.api.jwt_role_claim
        self.projects_claim = settings.api.jwt_projects_claim
        self.jwks = jwt.PyJWKClient(jwks_url, lifespan=300, timeout=5,
                                     cooldown_duration=settings.api.jwks_refetch_cooldown_s)

    def _decode(self, token: str) -> dict[str, Any]:
        key = self.jwks.get_signing_key_from_jwt(token)
        claims: dict[str, Any] = jwt.decode(
            token, key.key, algorithms=ALGORITHMS, audience=self.audience, issuer=self.issuer,
            options={"require": ["exp", "sub", "iss", "aud"]}, leeway=5)
        return claims

    async def authenticate(self, token: str) -> Principal:
        try:
            claims = await asyncio.to_thread(self._decode, token)
        except (jwt.PyJWTError, jwt.PyJWKClientError) as exc:
            # PyJWKClientError covers an unknown key id even after refetching, and an unreachable JWKS.
            raise NotAuthenticated(f"invalid bearer token: {exc}", headers={"WWW-Authenticate": "Bearer"}) from exc
        try:
            role = parse_role(claims.get(self.role_claim))
        except ValueError as exc:
            raise Forbidden(f"token claim {self.role_claim!r}: {exc}") from exc
        projects = claims.get(self.projects_claim, [])
        if isinstance(projects, str):
            projects = [projects]
        if not isinstance(projects, list) or not all(isinstance(p, str) for p in projects):
            raise Forbidden(f"token claim {self.projects_claim!r} must be a list of project ids or '*'")
        if not projects:
            raise Forbidden(f"token names no project in {self.projects_claim!r} (use '{ALL_PROJECTS}' for all)")
        return Principal(str(claims["sub"]), role, frozenset(projects), "jwt", expires_at=float(claims["exp"]))
