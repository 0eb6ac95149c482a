"""API keys in Redis, stored only as salted hashes.

A key reads ``aios_<id>_<secret>``. Redis keeps, under the id, a random salt and
SHA-256(salt + secret), never the secret. The secret is 256 random bits, so a fast hash is enough:
slow password hashes (scrypt, argon2) defend low-entropy passwords and would cost every request.
Roles and projects are stored as given; what they allow is the API's business.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass

import redis.asyncio as aioredis

from aios.connectors.context.base import text

_KEY = re.compile(r"^aios_([0-9a-f]{16})_([A-Za-z0-9_-]{20,100})$")
KEY_PREFIX = "aios_"


@dataclass(frozen=True)
class KeyRecord:
    """What is known of a key: never its secret, never its hash."""

    id: str
    role: str
    projects: tuple[str, ...]
    name: str
    created_at: int
    revoked: bool


def _digest(salt: bytes, secret: str) -> str:
    return hashlib.sha256(salt + secret.encode()).hexdigest()


def looks_like_key(token: str) -> bool:
    """An API key rather than a JWT (keys carry a fixed prefix)."""
    return token.startswith(KEY_PREFIX)


def key_id_of(token: str) -> str | None:
    """The id part of a well-formed key, or None."""
    match = _KEY.match(token)
    return match.group(1) if match else None


class KeyStore:
    """Keys under ``<prefix>:apikey:<id>``, with an index set ``<prefix>:apikeys``."""

    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    def _hkey(self, key_id: str) -> str:
        return f"{self.prefix}:apikey:{key_id}"

    @property
    def _index(self) -> str:
        return f"{self.prefix}:apikeys"

    async def create(self, role: str, projects: list[str], name: str = "") -> tuple[str, KeyRecord]:
        """Store a new key; return the full key (shown once) and its record."""
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        record = KeyRecord(id=key_id, role=role, projects=tuple(sorted(set(projects))), name=name,
                           created_at=int(time.time()), revoked=False)
        await self.redis.hset(self._hkey(key_id), mapping={
            "salt": salt.hex(), "hash": _digest(salt, secret), "role": role,
            "projects": json.dumps(list(record.projects)), "name": name, "created_at": record.created_at,
            "revoked": 0})
        await self.redis.sadd(self._index, key_id)
        return f"{KEY_PREFIX}{key_id}_{secret}", record

    async def revoke(self, key_id: str) -> KeyRecord | None:
        """Mark a key revoked; None when there is no such key."""
        if not await self.redis.exists(self._hkey(key_id)):
            return None
        await self.redis.hset(self._hkey(key_id), "revoked", 1)
        return await self.get(key_id)

    async def get(self, key_id: str) -> KeyRecord | None:
        raw = await self.redis.hgetall(self._hkey(key_id))
        if not raw:
            return None
        f = {text(k): text(v) for k, v in raw.items()}
        return KeyRecord(id=key_id, role=f["role"], projects=tuple(json.loads(f["projects"])), name=f["name"],
                         created_at=int(f["created_at"]), revoked=f["revoked"] == "1")

    async def list(self) -> list[KeyRecord]:
        ids = sorted(text(i) for i in await self.redis.smembers(self._index))
        found = [await self.get(i) for i in ids]
        return [k for k in found if k is not None]

    async def verify(self, token: str) -> KeyRecord | None:
        """The record of a valid, unrevoked key; None for anything else (malformed, unknown, wrong
        secret, revoked), so callers answer every failure alike."""
        match = _KEY.match(token)
        if match is None:
            return None
        key_id, secret = match.groups()
        salt, digest, role, projects, name, created_at, revoked = await self.redis.hmget(
            self._hkey(key_id), ["salt", "hash", "role", "projects", "name", "created_at", "revoked"])
        if digest is None or salt is None or role is None or projects is None or text(revoked or "") == "1":
            return None
        if not hmac.compare_digest(_digest(bytes.fromhex(text(salt)), secret), text(digest)):
            return None
        return KeyRecord(id=key_id, role=text(role), projects=tuple(json.loads(projects)), name=text(name or ""),
                         created_at=int(text(created_at or "0")), revoked=False)
