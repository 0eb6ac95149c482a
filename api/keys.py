"""API keys in Redis, stored only as salted hashes.

A key reads ``aios_<id>_<secret>``. Redis keeps, under the id, a random salt and
SHA-256(salt + secret), never the secret. The secret is 256 random bits, so a fast hash is enough:
slow password hashes (scrypt, argon2) defend low-entropy passwords and would cost every request.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time

import redis.asyncio as aioredis

from api.errors import NotAuthenticated, NotFound
from api.models import KeyOut
from api.principal import ALL_PROJECTS, Principal, parse_role
from api.ratelimit import RateLimiter

_KEY = re.compile(r"^aios_([0-9a-f]{16})_([A-Za-z0-9_-]{20,100})$")
_PROJECT = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _digest(salt: bytes, secret: str) -> str:
    return hashlib.sha256(salt + secret.encode()).hexdigest()


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def looks_like_key(token: str) -> bool:
    return token.startswith("aios_")


class KeyStore:
    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    def _hkey(self, key_id: str) -> str:
        return f"{self.prefix}:apikey:{key_id}"

    @property
    def _index(self) -> str:
        return f"{self.prefix}:apikeys"

    async def create(self, role: str, projects: list[str], name: str = "") -> tuple[str, KeyOut]:
        """Store a new key; return the full key (shown once) and its record."""
        parsed = parse_role(role)
        if not projects:
            raise ValueError("name the key's projects (--project P, repeatable) or '*' for all")
        for p in projects:
            if p != ALL_PROJECTS and not _PROJECT.match(p):
                raise ValueError(f"project {p!r}: use 1-128 characters from A-Z a-z 0-9 . _ : -, or '*'")
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        info = KeyOut(id=key_id, role=parsed.value, projects=sorted(set(projects)), name=name,
                      created_at=int(time.time()), revoked=False)
        await self.redis.hset(self._hkey(key_id), mapping={
            "salt": salt.hex(), "hash": _digest(salt, secret), "role": info.role,
            "projects": json.dumps(info.projects), "name": name, "created_at": info.created_at, "revoked": 0})
        await self.redis.sadd(self._index, key_id)
        return f"aios_{key_id}_{secret}", info

    async def revoke(self, key_id: str) -> KeyOut:
        if not await self.redis.exists(self._hkey(key_id)):
            raise NotFound(f"no API key {key_id!r}; `aios keys list` shows the ids")
        await self.redis.hset(self._hkey(key_id), "revoked", 1)
        info = await self.get(key_id)
        assert info is not None  # noqa: S101 - it exists: checked above
        return info

    async def get(self, key_id: str) -> KeyOut | None:
        raw = await self.redis.hgetall(self._hkey(key_id))
        if not raw:
            return None
        f = {_str(k): _str(v) for k, v in raw.items()}
        return KeyOut(id=key_id, role=f["role"], projects=json.loads(f["projects"]), name=f["name"],
                      created_at=int(f["created_at"]), revoked=f["revoked"] == "1")

    async def list(self) -> list[KeyOut]:
        ids = sorted(_str(i) for i in await self.redis.smembers(self._index))
        found = [await self.get(i) for i in ids]
        return [k for k in found if k is not None]

    async def authenticate(self, token: str, limiter: RateLimiter | None = None) -> Principal:
        """The principal of a valid, unrevoked key; NotAuthenticated otherwise (one message for all).

        With ``limiter``, the key's rate-limit bucket is charged in the same Redis round trip (a
        wrong secret for a real key id is charged too, which slows guessing).
        """
        match = _KEY.match(token)
        invalid = NotAuthenticated("invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"})
        if match is None:
            raise invalid
        key_id, secret = match.groups()
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(self._hkey(key_id), ["salt", "hash", "role", "projects", "revoked"])
        if limiter is not None:
            await limiter.charge(pipe, "key", key_id)
        replies = await pipe.execute()
        salt, digest, role, projects, revoked = replies[0]
        if digest is None or salt is None or role is None or projects is None or _str(revoked or "") == "1":
            raise invalid
        if not hmac.compare_digest(_digest(bytes.fromhex(_str(salt)), secret), _str(digest)):
            raise invalid
        if limiter is not None:
            limiter.verdict(replies[1])
        return Principal(key_id, parse_role(_str(role)), frozenset(json.loads(projects)), "key")


def key_doc(info: KeyOut) -> dict[str, object]:
    """What `aios keys` prints: never the secret, never its hash."""
    return info.model_dump()
