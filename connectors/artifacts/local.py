"""Artifacts on the local filesystem, under one root folder (``<data_dir>/artifacts`` by default).

Writes go to a temporary file that is renamed into place, so a reader never sees half a file and a
crash leaves no torn artifact. Every key is resolved and checked to stay under the root.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

from aios.connectors.artifacts.base import ArtifactError, ArtifactNotFoundError, ArtifactStore, StoredObject


class LocalArtifactStore(ArtifactStore):
    def __init__(self, root: Path, *, max_bytes: int | None = None) -> None:
        self.root = root.expanduser().resolve()
        if max_bytes is not None:
            self.max_bytes = max_bytes

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise ArtifactError(f"artifact key {key!r} leaves the store's folder {self.root}")
        return path

    def uri(self, key: str) -> str:
        return (self.root / key).as_uri() if key else self.root.as_uri() + "/"

    def key_of(self, uri: str) -> str | None:
        parts = urlsplit(uri)
        if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
            return None
        path = Path(unquote(parts.path))
        if ".." in path.parts or not path.is_relative_to(self.root) or path == self.root:
            return None
        return path.relative_to(self.root).as_posix()

    async def write(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._write, self._path(key), data)

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise ArtifactError(f"cannot write artifact {path}: {exc}") from exc

    async def read(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ArtifactNotFoundError(f"no artifact {key!r} in {self.root}") from exc
        except OSError as exc:
            raise ArtifactError(f"cannot read artifact {path}: {exc}") from exc

    async def list_prefix(self, prefix: str, limit: int) -> list[StoredObject]:
        return await asyncio.to_thread(self._list, prefix, limit)

    def _list(self, prefix: str, limit: int) -> list[StoredObject]:
        # Walk only the folder the prefix names (prefixes end in '/': a project's or a task's).
        folder = self._path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        if not folder.is_dir():
            return []
        found: list[StoredObject] = []
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames.sort()
            for name in sorted(filenames):
                if name.startswith(".part-"):
                    continue  # a write in progress
                path = Path(dirpath) / name
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    found.append(StoredObject(key, path.stat().st_size, path.as_uri()))
        found.sort(key=lambda o: o.key)
        return found[:limit]
