"""API keys as the API sees them: the key store's records become principals and ``KeyOut``
documents, and every way a key can fail reads the same to the caller."""

from __future__ import annotations

import re

from aios.api.errors import NotAuthenticated, NotFound
from aios.api.models import KeyOut
from aios.api.principal import ALL_PROJECTS, Principal, parse_role
from aios.connectors.context.keys import KeyRecord, KeyStore, looks_like_key

_PROJECT = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

__all__ = ["ApiKeys", "key_doc", "looks_like_key"]


def _out(record: KeyRecord) -> KeyOut:
    return KeyOut(id=record.id, role=record.role, projects=list(record.projects), name=record.name,
                  created_at=record.created_at, revoked=record.revoked)


class ApiKeys:
    """Create, list, revoke and check keys, over the Redis key store."""

    def __init__(self, store: KeyStore) -> None:
        self.store = store

    async def create(self, role: str, projects: list[str], name: str = "") -> tuple[str, KeyOut]:
        """Store a new key; return the full key (shown once) and its record."""
        parsed = parse_role(role)
        if not projects:
            raise ValueError("name the key's projects (--project P, repeatable) or '*' for all")
        for p in projects:
            if p != ALL_PROJECTS and not _PROJECT.match(p):
                raise ValueError(f"project {p!r}: use 1-128 characters from A-Z a-z 0-9 . _ : -, or '*'")
        key, record = await self.store.create(parsed.value, projects, name)
        return key, _out(record)

    async def revoke(self, key_id: str) -> KeyOut:
        record = await self.store.revoke(key_id)
        if record is None:
            raise NotFound(f"no API key {key_id!r}; `aios keys list` shows the ids")
        return _out(record)

    async def list(self) -> list[KeyOut]:
        return [_out(r) for r in await self.store.list()]

    async def authenticate(self, token: str) -> Principal:
        """The principal of a valid, unrevoked key; NotAuthenticated otherwise (one message for all)."""
        record = await self.store.verify(token)
        if record is None:
            raise NotAuthenticated("invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"})
        return Principal(record.id, parse_role(record.role), frozenset(record.projects), "key")


def key_doc(info: KeyOut) -> dict[str, object]:
    """What `aios keys` prints: never the secret, never its hash."""
    return info.model_dump()
