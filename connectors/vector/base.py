"""What vector memory is made of, free of heavy imports: the embedder interface, the memory items
and recall hits, their stable ids, and the errors. numpy, onnxruntime and qdrant-client come with
the ``vector`` extra and are imported only by the backends (``onnx``, ``openai``, ``qdrant``).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from aios.connectors.errors import ConnectorError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

EXTRA_HINT = "pip install 'aios[vector]'"
DEFAULT_DIMENSION = 384
# Fixed forever: changing it would give every memory a new point id and duplicate the index.
MEMORY_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "aios:memory")


class EmbeddingError(ConnectorError):
    """The embedding model could not be loaded or run."""


class EmbeddingDependencyError(EmbeddingError):
    """onnxruntime or tokenizers is not installed (they come with the ``vector`` extra)."""


class EmbeddingModelError(EmbeddingError):
    """The model folder is missing, incomplete or unreadable; the message names the setting."""


class Embedder(Protocol):
    """What vector memory needs from an embedding model."""

    @property
    def dimension(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]: ...


def embedding_output(texts: Sequence[str], dimension: int) -> NDArray[np.float32]:
    """The array ``embed`` fills, after refusing a bare string (it would embed each character)."""
    import numpy as np

    if isinstance(texts, str):
        raise TypeError("embed() takes a sequence of texts; wrap a single text in a list")
    return np.empty((len(texts), dimension), dtype=np.float32)


def unit_rows(vectors: NDArray[np.float32]) -> NDArray[np.float32]:
    import numpy as np

    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit: NDArray[np.float32] = (vectors / np.clip(norms, 1e-12, None)).astype(np.float32)
    return unit


def collection_name(prefix: str = "aios") -> str:
    """The default collection of a deployment, e.g. ``aios-memory`` for the ``aios`` prefix."""
    return f"{prefix}-memory"


def point_id(memory_id: str) -> str:
    """The stable Qdrant point id (a UUID string) of a memory id."""
    return str(uuid.uuid5(MEMORY_NAMESPACE, memory_id))


@dataclass(frozen=True, slots=True)
class MemoryItem:
    """One memory to index: its text is embedded, the rest is stored as filterable payload."""

    memory_id: str
    text: str
    project: str
    scope: str
    scope_id: str
    role: str
    kind: str
    ts: int  # epoch milliseconds
    task_id: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    privacy: str = "normal"  # restricted: recalled into restricted tasks only
    embed_text: str | None = None  # what to embed when ``text`` (the payload) is sealed

    def payload(self) -> dict[str, Any]:
        return {
            **self.extra,
            "memory_id": self.memory_id,
            "text": self.text,
            "project": self.project,
            "scope": self.scope,
            "scope_id": self.scope_id,
            "role": self.role,
            "kind": self.kind,
            "ts": self.ts,
            "task_id": self.task_id,
            "privacy": self.privacy,
        }


@dataclass(frozen=True, slots=True)
class Recall:
    """A search hit: the memory id, cosine similarity, the stored text and the full payload."""

    id: str
    score: float
    text: str
    payload: dict[str, Any]
