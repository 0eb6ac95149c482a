"""The artifact store: files agents produce, kept by key in object storage, read back checked.

One interface, two backends: the local filesystem under the data directory (the default) and any
S3-compatible service (``s3.py``, through obstore). A store hands out URIs (``file://…``,
``s3://bucket/prefix/…``) and takes back only its own: :meth:`ArtifactStore.key_of` is None for a URI
outside it, so a forged reference in an event cannot make a reader open another path or bucket.

    ConnectorError
    └── ArtifactError              an artifact could not be stored or read
        ├── ArtifactNotFoundError  no artifact under that key (gone, or never written)
        ├── ArtifactTooLargeError  over AIOS_ARTIFACTS_MAX_BYTES
        ├── ArtifactChecksumError  the bytes read back do not match the reference's size and sha256
        └── ArtifactAccessError    the store refused the credentials (says which settings to check)
    StoreUnavailableError          the store did not answer: retried, never the record's fault
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from aios.connectors.errors import ConnectorError
from aios.schemas.artifacts import ArtifactRef, check_name

DEFAULT_MAX_BYTES = 64 * 1024 * 1024


class ArtifactError(ConnectorError):
    """An artifact could not be stored or read."""


class ArtifactNotFoundError(ArtifactError):
    """No artifact is kept under the key (removed, expired, or never written)."""


class ArtifactTooLargeError(ArtifactError):
    """An artifact over the store's size limit."""


class ArtifactChecksumError(ArtifactError):
    """What was read back is not what the reference describes (size or sha256)."""


class ArtifactAccessError(ArtifactError):
    """The store refused the request: missing or wrong credentials, or no permission on the bucket."""


@dataclass(frozen=True)
class ArtifactConfig:
    """Where artifacts are kept, derived from the settings (streams/settings.py) at the edge.

    ``url`` is ``s3://bucket[/prefix]`` or ``file:///path``; None keeps them in ``<data_dir>/artifacts``.
    """

    data_dir: Path
    url: str | None = None
    endpoint: str | None = None  # an S3-compatible service's URL (MinIO, Ceph, R2, moto); http:// allowed
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    timeout_s: float = 30.0


@dataclass(frozen=True)
class StoredObject:
    """An artifact as a listing shows it: its key in the store, size in bytes and URI."""

    key: str
    size: int
    uri: str


class ArtifactStore(ABC):
    """Bytes by key. Keys are ``schemas.artifacts.artifact_key`` paths: '/'-separated, no '.' or '..'."""

    max_bytes: int = DEFAULT_MAX_BYTES

    @abstractmethod
    def uri(self, key: str) -> str:
        """The URI an event carries for ``key``."""

    @abstractmethod
    def key_of(self, uri: str) -> str | None:
        """The key a URI of this store names, or None for any other URI."""

    @abstractmethod
    async def write(self, key: str, data: bytes) -> None:
        """Keep ``data`` under ``key``, replacing what was there (a replay writes the same bytes)."""

    @abstractmethod
    async def read(self, key: str) -> bytes:
        """The bytes under ``key``; :class:`ArtifactNotFoundError` when there are none."""

    @abstractmethod
    async def list_prefix(self, prefix: str, limit: int) -> list[StoredObject]:
        """Up to ``limit`` artifacts whose keys start with ``prefix``, by key."""

    async def save(self, key: str, name: str, data: bytes) -> ArtifactRef:
        """Store ``data`` under ``key`` and return the reference an event carries."""
        check_name(name)
        if len(data) > self.max_bytes:
            raise ArtifactTooLargeError(
                f"artifact {name!r} is {len(data)} bytes; at most {self.max_bytes} (AIOS_ARTIFACTS_MAX_BYTES)")
        await self.write(key, data)
        return ArtifactRef(name, len(data), hashlib.sha256(data).hexdigest(), self.uri(key))

    async def load(self, ref: ArtifactRef) -> bytes:
        """The bytes ``ref`` names, checked against its size and sha256."""
        key = self.key_of(ref.uri)
        if key is None:
            raise ArtifactNotFoundError(f"{ref.uri} is not in this artifact store ({self.uri('')})")
        data = await self.read(key)
        digest = hashlib.sha256(data).hexdigest()
        if len(data) != ref.size or digest != ref.sha256:
            raise ArtifactChecksumError(
                f"{ref.uri}: read {len(data)} bytes with sha256 {digest}, but the reference says {ref.size} bytes "
                f"with sha256 {ref.sha256}: the object was changed or damaged after it was written")
        return data
