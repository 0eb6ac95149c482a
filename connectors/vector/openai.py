"""Provider embeddings through the OpenAI embeddings API (or any server that speaks it)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from aios.connectors.vector.base import EmbeddingError, embedding_output, unit_rows


class OpenAIEmbedder:
    """Provider embeddings through the OpenAI embeddings API (or any server speaking it).

    v3 models shorten their vectors on request (``dimensions``), so the default 384 keeps the
    collection the shape the local model gives; vectors are re-normalised for cosine search.
    """

    def __init__(self, model: str, *, api_key: str, base_url: str | None = None, dimension: int = 384,
                 batch_size: int = 256, timeout_s: float = 30.0, max_retries: int = 2) -> None:
        import openai

        if dimension < 1 or batch_size < 1:
            raise ValueError(f"dimension and batch_size must be at least 1, got {dimension} and {batch_size}")
        self.model = model
        self.batch_size = batch_size
        self._dimension = dimension
        self._client = openai.OpenAI(api_key=api_key, base_url=base_url, timeout=timeout_s,
                                     max_retries=max_retries)

    @property
    def dimension(self) -> int:
        return self._dimension

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Embed ``texts`` into an ``(n, dimension)`` float32 array of unit vectors, in input order."""
        import openai

        out = embedding_output(texts, self._dimension)
        for start in range(0, len(texts), self.batch_size):
            chunk = list(texts[start : start + self.batch_size])
            try:
                reply = self._client.embeddings.create(model=self.model, input=chunk, dimensions=self._dimension)
            except openai.AuthenticationError as exc:
                raise EmbeddingError(f"OpenAI embeddings rejected the key ({exc.status_code}): check "
                                     "AIOS_OPENAI_API_KEY, or set AIOS_EMBEDDINGS=local") from exc
            except openai.OpenAIError as exc:
                raise EmbeddingError(f"OpenAI embeddings with {self.model} failed: {exc}") from exc
            rows = sorted(reply.data, key=lambda d: d.index)
            vectors = np.asarray([row.embedding for row in rows], dtype=np.float32)
            if vectors.shape != (len(chunk), self._dimension):
                raise EmbeddingError(f"OpenAI embeddings returned shape {vectors.shape} for {len(chunk)} texts "
                                     f"of {self._dimension} dimensions; does {self.model} support `dimensions`?")
            out[start : start + len(chunk)] = unit_rows(vectors)
        return out

    def close(self) -> None:
        self._client.close()
