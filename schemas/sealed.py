"""Sealed fields: one string field of an event encrypted with AES-GCM, readable only with the key.

A sealed value is text, so it fits the string fields the Avro contracts already have:
``aios:sealed:v1:<key id>:<base64url(nonce + ciphertext + tag)>``. Readers tell a sealed value from
plain text by that prefix. The associated data names what the value is (``field_aad``: the kind of
field and the ids it belongs to), so a sealed description copied into another task, or another
tenant's output pasted into a dependency, fails to open instead of being read as that field.

A :class:`KeyRing` holds one or more keys by id: the first seals, every one opens, so a key can be
rotated by putting the new one first and dropping the old one once nothing sealed with it remains.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from aios.schemas.errors import ConfigError, SchemaError

SEALED_PREFIX = "aios:sealed:v1:"
_KID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_SEALED = re.compile(r"^aios:sealed:v1:([A-Za-z0-9_-]{1,32}):([A-Za-z0-9_-]+)$")
_NONCE_BYTES = 12  # AES-GCM's standard nonce; random per value (2^-32 collision bound at 2^32 values per key)
_TAG_BYTES = 16
_KEY_SIZES = (16, 24, 32)
ENV = "AIOS_ENCRYPTION_KEY"

if TYPE_CHECKING:  # cryptography is imported when a key is used, not by every process that imports schemas
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM


class SealedFieldError(SchemaError):
    """A sealed value cannot be opened here; the message says why and what to set."""


class KeyNotAvailableError(SealedFieldError):
    """The value was sealed with a key this process does not hold (or it holds no key at all)."""

    def __init__(self, message: str, kid: str) -> None:
        super().__init__(message)
        self.kid = kid


class TamperedFieldError(SealedFieldError):
    """The key is known but the value does not open: altered, truncated, or moved to another field."""


def is_sealed(value: object) -> bool:
    """Whether ``value`` is a sealed field (rather than plain text)."""
    return isinstance(value, str) and value.startswith(SEALED_PREFIX)


def sealed_kid(value: str) -> str | None:
    """The id of the key that sealed ``value`` (None for plain text or a malformed seal)."""
    match = _SEALED.match(value)
    return match.group(1) if match else None


def plaintext_bytes(value: str) -> int | None:
    """How many UTF-8 bytes a sealed ``value`` holds (None for plain text or a malformed seal), so a
    process without the key can still check a length limit: at most 4 bytes per character."""
    match = _SEALED.match(value)
    if match is None:
        return None
    body = len(match.group(2)) * 3 // 4  # unpadded base64: 4 characters carry 3 bytes
    return max(body - _NONCE_BYTES - _TAG_BYTES, 0)


def field_aad(kind: str, *ids: str) -> bytes:
    """The associated data binding a sealed value to what it is: ``kind`` (description, output,
    memory, …) and the ids that place it (project, task, memory id). JSON keeps the parts apart,
    whatever separators the ids themselves contain."""
    return json.dumps([kind, *ids], ensure_ascii=False, separators=(",", ":")).encode()


def new_key() -> str:
    """A fresh 256-bit key, base64 encoded, for ``AIOS_ENCRYPTION_KEY=<id>:<key>``."""
    return base64.b64encode(os.urandom(32)).decode()


def _b64decode(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    return base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)


@dataclass(frozen=True)
class KeyRing:
    """AES-GCM keys by id; ``primary`` seals, all of them open."""

    keys: tuple[tuple[str, bytes], ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise ConfigError(f"{ENV}: the key ring is empty; give at least one <id>:<base64 key>")

    @classmethod
    def parse(cls, spec: str) -> KeyRing:
        """``kid1:base64key[,kid2:base64key…]``: the first key seals, all open. Keys are 16, 24 or 32
        bytes (AES-128/192/256), in standard or URL-safe base64."""
        keys: list[tuple[str, bytes]] = []
        for n, part in enumerate(p.strip() for p in spec.split(",")):
            if not part:
                continue
            kid, sep, encoded = part.partition(":")
            kid = kid.strip()
            if not sep or not _KID.match(kid):
                raise ConfigError(f"{ENV}: entry {n + 1} must read <id>:<base64 key>, with an id of 1-32 "
                                  "characters from A-Z a-z 0-9 _ -")
            try:
                key = _b64decode(encoded.strip())
            except (binascii.Error, ValueError):
                raise ConfigError(f"{ENV}: the key of {kid!r} is not base64") from None
            if len(key) not in _KEY_SIZES:
                raise ConfigError(f"{ENV}: the key of {kid!r} is {len(key)} bytes; use 16, 24 or 32 "
                                  "(e.g. `aios keys new-encryption-key`)")
            if any(kid == known for known, _ in keys):
                raise ConfigError(f"{ENV}: key id {kid!r} appears twice")
            keys.append((kid, key))
        return cls(tuple(keys))

    @property
    def primary(self) -> str:
        """The id of the key that seals."""
        return self.keys[0][0]

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(kid for kid, _ in self.keys)

    @cached_property
    def _ciphers(self) -> dict[str, AESGCM]:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        return {kid: AESGCM(key) for kid, key in self.keys}

    def _aead(self, kid: str) -> AESGCM | None:
        return self._ciphers.get(kid)

    def seal(self, plaintext: str, aad: bytes) -> str:
        """``plaintext`` sealed with the primary key, bound to ``aad``."""
        aead = self._aead(self.primary)
        if aead is None:  # pragma: no cover - the primary key is in the ring by construction
            raise KeyNotAvailableError(f"the primary key {self.primary!r} is missing", self.primary)
        nonce = os.urandom(_NONCE_BYTES)
        body = nonce + aead.encrypt(nonce, plaintext.encode(), aad)
        return f"{SEALED_PREFIX}{self.primary}:{base64.urlsafe_b64encode(body).decode().rstrip('=')}"

    def unseal(self, value: str, aad: bytes) -> str:
        """The plaintext of a sealed ``value``; plain text is returned as it is."""
        if not is_sealed(value):
            return value
        from cryptography.exceptions import InvalidTag

        kid, sep, encoded = value[len(SEALED_PREFIX):].partition(":")
        if not sep or not _KID.match(kid):
            raise TamperedFieldError("a sealed field is malformed (its prefix is there, its key id or body is not)")
        aead = self._aead(kid)
        if aead is None:
            raise KeyNotAvailableError(
                f"sealed with key {kid!r}, which {ENV} here does not hold (it holds {', '.join(self.kids)})", kid)
        try:
            # Characters outside the alphabet are dropped here; the bytes themselves are authenticated
            # by the GCM tag below, so any altered byte fails.
            body = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            if len(body) <= _NONCE_BYTES:
                raise ValueError("too short")
            return aead.decrypt(body[:_NONCE_BYTES], body[_NONCE_BYTES:], aad).decode()
        except (InvalidTag, ValueError, binascii.Error, UnicodeDecodeError):
            raise TamperedFieldError(
                f"a field sealed with key {kid!r} does not open: it was altered, or it belongs to another "
                "field or task") from None


def unseal_with(ring: KeyRing | None, value: str, aad: bytes) -> str:
    """Like :meth:`KeyRing.unseal`, for a process that may hold no key ring at all."""
    if ring is not None:
        return ring.unseal(value, aad)
    if not is_sealed(value):
        return value
    kid = sealed_kid(value) or "?"
    raise KeyNotAvailableError(f"sealed with key {kid!r}, and this process has no {ENV}", kid)
