"""Artifacts in an S3-compatible bucket (AWS S3, MinIO, Ceph, R2…), through obstore.

obstore (the Rust ``object_store`` crate's Python binding) signs requests, retries transient
failures and streams bodies; nothing here speaks S3 itself. It sits behind the ``s3`` extra: a
compiled wheel that only deployments with a bucket need.

The client is given every setting explicitly. With no access key configured, requests go unsigned
(a public bucket): the client is never left to look for credentials in instance metadata, which
would hang on machines without it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aios.connectors.artifacts.base import (
    ArtifactAccessError,
    ArtifactConfig,
    ArtifactError,
    ArtifactNotFoundError,
    ArtifactStore,
    StoredObject,
)
from aios.connectors.errors import StoreUnavailableError
from aios.schemas.errors import ConfigError

if TYPE_CHECKING:
    from obstore.store import S3Store


def parse_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of ``s3://bucket[/prefix]``; :class:`ConfigError` for anything else."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError(f"AIOS_ARTIFACTS_URL={url!r}: use s3://bucket or s3://bucket/prefix")
    return parts.netloc, parts.path.strip("/")


class S3ArtifactStore(ArtifactStore):
    def __init__(self, config: ArtifactConfig) -> None:
        try:
            from obstore.store import S3Store
        except ImportError as exc:
            raise ConfigError("AIOS_ARTIFACTS_URL is an s3:// URL, which needs the s3 extra: "
                              "pip install 'aios[s3]'") from exc
        assert config.url is not None  # noqa: S101 - the factory chose this backend for its URL
        self.bucket, self.prefix = parse_url(config.url)
        self.max_bytes = config.max_bytes
        options: dict[str, Any] = {"region": config.region}
        if config.endpoint:
            options["endpoint"] = config.endpoint
        if config.access_key_id and config.secret_access_key:
            options["access_key_id"] = config.access_key_id
            options["secret_access_key"] = config.secret_access_key
        else:
            options["skip_signature"] = True
        client = {"allow_http": bool(config.endpoint and config.endpoint.startswith("http://")),
                  "timeout": timedelta(seconds=config.timeout_s),
                  "connect_timeout": timedelta(seconds=min(config.timeout_s, 5.0))}
        retry = {"max_retries": 3, "retry_timeout": timedelta(seconds=config.timeout_s)}
        self._store: S3Store = S3Store(self.bucket, prefix=self.prefix or None, client_options=client,  # type: ignore[arg-type]
                                       retry_config=retry, **options)  # type: ignore[arg-type]
        self._base = f"s3://{self.bucket}/" + (f"{self.prefix}/" if self.prefix else "")

    def uri(self, key: str) -> str:
        return self._base + key

    def key_of(self, uri: str) -> str | None:
        if not uri.startswith(self._base):
            return None
        key = uri[len(self._base):]
        return key if key and ".." not in key.split("/") else None

    # obstore's blocking calls, each in a worker thread: its async API completes Python futures
    # from its own runtime's threads, and a CLI process exiting right after one was seen to abort
    # (SIGABRT) now and then; a blocking call leaves nothing of Python's to those threads.
    async def write(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._write, key, data)

    def _write(self, key: str, data: bytes) -> None:
        import obstore

        with _mapped(key):
            obstore.put(self._store, key, data)

    async def read(self, key: str) -> bytes:
        return await asyncio.to_thread(self._read, key)

    def _read(self, key: str) -> bytes:
        import obstore

        with _mapped(key):
            return bytes(obstore.get(self._store, key).bytes())

    async def list_prefix(self, prefix: str, limit: int) -> list[StoredObject]:
        return await asyncio.to_thread(self._list, prefix, limit)

    def _list(self, prefix: str, limit: int) -> list[StoredObject]:
        import obstore

        found: list[StoredObject] = []
        with _mapped(prefix):
            for batch in obstore.list(self._store, prefix, chunk_size=min(max(limit, 1), 1000)):
                found += [StoredObject(m["path"], int(m["size"]), self.uri(m["path"]))
                          for m in batch if m["path"].startswith(prefix)]
                if len(found) >= limit:
                    break
        found.sort(key=lambda o: o.key)
        return found[:limit]


@contextmanager
def _mapped(key: str) -> Iterator[None]:
    """obstore's errors as ours: a missing object, refused credentials, or an unreachable store."""
    from obstore import exceptions as e

    try:
        yield
    except (FileNotFoundError, e.NotFoundError) as exc:
        raise ArtifactNotFoundError(f"no artifact {key!r} in the bucket") from exc
    except (e.PermissionDeniedError, e.UnauthenticatedError) as exc:
        raise _refused(key, exc) from exc
    except (e.GenericError, OSError, TimeoutError) as exc:
        status = _status(exc)
        if status in (401, 403):
            raise _refused(key, exc) from exc
        if status is not None and 400 <= status < 500:
            raise ArtifactError(f"the artifact store refused {key!r}: {_first_line(exc)}") from exc
        raise StoreUnavailableError(f"the artifact store did not answer for {key!r}: {_first_line(exc)}") from exc
    except e.BaseError as exc:
        raise ArtifactError(f"the artifact store failed on {key!r}: {_first_line(exc)}") from exc


def _refused(key: str, exc: BaseException) -> ArtifactAccessError:
    return ArtifactAccessError(f"the bucket refused access to {key!r}: check AIOS_ARTIFACTS_ACCESS_KEY_ID, "
                               f"AIOS_ARTIFACTS_SECRET_ACCESS_KEY and the bucket's policy ({_first_line(exc)})")


_STATUS = re.compile(r"status code: (\d{3})")


def _status(exc: BaseException) -> int | None:
    """The HTTP status of an obstore error that has no class of its own (a listing's, say): obstore
    keeps it only in the message, so it is read from there, at this one boundary."""
    match = _STATUS.search(str(exc))
    return int(match.group(1)) if match else None


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
