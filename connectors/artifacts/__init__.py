"""The artifact store: files agents produce, on the local filesystem or in an S3-compatible bucket."""

from __future__ import annotations

from aios.connectors.artifacts.base import (
    ArtifactAccessError,
    ArtifactChecksumError,
    ArtifactConfig,
    ArtifactError,
    ArtifactNotFoundError,
    ArtifactStore,
    ArtifactTooLargeError,
    StoredObject,
)
from aios.schemas.errors import ConfigError


def open_artifacts(config: ArtifactConfig) -> ArtifactStore:
    """The store ``config.url`` names: ``s3://`` (the s3 extra), ``file://``, or ``<data_dir>/artifacts``.

    Backends are imported lazily, so a process on the filesystem never loads the S3 client.
    """
    from pathlib import Path
    from urllib.parse import unquote, urlsplit

    url = config.url
    if url is None or url.startswith("file:"):
        from aios.connectors.artifacts.local import LocalArtifactStore

        root = config.data_dir / "artifacts" if url is None else Path(unquote(urlsplit(url).path))
        if url is not None and not root.is_absolute():
            raise ConfigError(f"AIOS_ARTIFACTS_URL={url!r}: a file URL names an absolute folder, e.g. file:///srv/artifacts")
        return LocalArtifactStore(root, max_bytes=config.max_bytes)
    if url.startswith("s3:"):
        from aios.connectors.artifacts.s3 import S3ArtifactStore

        return S3ArtifactStore(config)
    raise ConfigError(f"AIOS_ARTIFACTS_URL={url!r}: use s3://bucket[/prefix] or file:///folder "
                      "(unset: <AIOS_DATA_DIR>/artifacts)")


__all__ = ["ArtifactAccessError", "ArtifactChecksumError", "ArtifactConfig", "ArtifactError",
           "ArtifactNotFoundError", "ArtifactStore", "ArtifactTooLargeError", "StoredObject", "open_artifacts"]
