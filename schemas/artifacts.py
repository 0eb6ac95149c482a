"""Artifacts in events: the reference a TaskResult carries for each file an agent produced, the rules
for artifact names, and where an artifact is kept (its key in the store).

A reference is name, size, sha256 and URI. On the wire it is an Avro ``map<string>`` (one per
artifact, in ``TaskResult.artifacts``): a map keeps the history sink's native ingest path (nested
records are not mapped there, connectors/history/ingest.py), and :func:`ref_problems` holds the
map to the four keys and their forms wherever a result is checked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

from aios.schemas.errors import SchemaError

MAX_ARTIFACTS = 100  # references one result carries
MAX_ARTIFACT_NAME_CHARS = 200
MAX_ARTIFACT_NAME_PARTS = 8  # folders in a name: "src/app/main.py" has three parts
MAX_ARTIFACT_URI_CHARS = 2_048
OUTPUT_ARTIFACT = "output.md"  # the name an oversized output is kept under
_NAME_PART = re.compile(r"[A-Za-z0-9._-]+")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_KEYS = frozenset({"name", "size", "sha256", "uri"})


class ArtifactNameError(SchemaError):
    """An artifact name that cannot be a key in a store; the message says what a name may be."""


class TooManyArtifactsError(SchemaError):
    """An attempt that would reference more than MAX_ARTIFACTS artifacts."""


def check_name(name: str) -> str:
    """``name`` if it is a valid artifact name, else :class:`ArtifactNameError` saying why.

    A name is a relative path: parts of A-Z a-z 0-9 . _ - joined by '/', none of them '.' or '..',
    at most MAX_ARTIFACT_NAME_PARTS parts and MAX_ARTIFACT_NAME_CHARS characters.
    """
    rule = (f"an artifact name is 1-{MAX_ARTIFACT_NAME_CHARS} characters: parts of A-Z a-z 0-9 . _ - "
            f"joined by '/' (at most {MAX_ARTIFACT_NAME_PARTS}), none of them '.' or '..', e.g. 'src/main.py'")
    if not isinstance(name, str) or not 0 < len(name) <= MAX_ARTIFACT_NAME_CHARS:
        raise ArtifactNameError(f"{name!r:.80}: {rule}")
    parts = name.split("/")
    if len(parts) > MAX_ARTIFACT_NAME_PARTS or any(
            p in (".", "..") or _NAME_PART.fullmatch(p) is None for p in parts):
        raise ArtifactNameError(f"{name!r:.80}: {rule}")
    return name


def artifact_key(project_id: str, task_id: str, attempt: int, name: str) -> str:
    """Where an artifact of one attempt is kept in a store: ``<project>/<task>/<attempt>/<name>``.

    Ids may be '.' or '..' (schemas/limits.py allows dots): each id is quoted and a leading dot
    escaped, so a key never climbs out of its project's folder in a filesystem store.
    """
    return f"{_segment(project_id)}/{_segment(task_id)}/{int(attempt)}/{check_name(name)}"


def project_prefix(project_id: str, task_id: str | None = None) -> str:
    """The key prefix of a project's artifacts (or of one of its tasks'), ending in '/'."""
    prefix = f"{_segment(project_id)}/"
    return prefix if task_id is None else f"{prefix}{_segment(task_id)}/"


def _segment(ident: str) -> str:
    quoted = quote(ident, safe="")
    return "%2E" + quoted[1:] if quoted.startswith(".") else quoted


@dataclass(frozen=True)
class ArtifactRef:
    """A file an agent produced: its name, size in bytes, SHA-256 (hex) and where it is kept."""

    name: str
    size: int
    sha256: str
    uri: str

    def to_event(self) -> dict[str, str]:
        """The Avro map a TaskResult carries."""
        return {"name": self.name, "size": str(self.size), "sha256": self.sha256, "uri": self.uri}

    @classmethod
    def from_event(cls, value: Mapping[str, str]) -> ArtifactRef:
        """The reference in a TaskResult's map (checked: :class:`ArtifactNameError` when it is not one)."""
        problem = ref_problems(value)
        if problem is not None:
            raise ArtifactNameError(f"not an artifact reference: {problem}")
        return cls(value["name"], int(value["size"]), value["sha256"], value["uri"])


def ref_problems(value: object) -> str | None:
    """What is wrong with a reference map, or None when it is one."""
    if not isinstance(value, Mapping) or set(value) != _KEYS:
        return f"a reference has exactly the keys {', '.join(sorted(_KEYS))}"
    if not all(isinstance(v, str) for v in value.values()):
        return "every value of a reference is text"
    try:
        check_name(value["name"])
    except ArtifactNameError as exc:
        return str(exc)
    size = value["size"]
    if not (size.isascii() and size.isdigit() and len(size) <= 15):
        return f"size {size[:20]!r} is not a whole number of bytes"
    if _SHA256.fullmatch(value["sha256"]) is None:
        return "sha256 is 64 lowercase hex digits"
    uri = value["uri"]
    if not 0 < len(uri) <= MAX_ARTIFACT_URI_CHARS or not uri.isprintable() or " " in uri:
        return f"uri is 1-{MAX_ARTIFACT_URI_CHARS} printable characters without spaces"
    return None
