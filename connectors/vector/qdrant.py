"""Vector memory in Qdrant: one collection of embedded memories with payload filters.

The same API serves qdrant-client local mode (a folder on disk, the embedded default) and a
Qdrant server (``AIOS_QDRANT_URL``). Point ids derive from memory ids, so re-indexing is idempotent.
The collection name readers use is an alias of a generation collection (``<name>--<tag>``), so a
rebuild fills a new generation and swaps the alias in one operation; both modes support aliases.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from aios.connectors.errors import ConnectorError, StoreQueryError, StoreUnavailableError
from aios.connectors.vector.base import (
    DEFAULT_DIMENSION,
    Embedder,
    MemoryItem,
    Recall,
    collection_name,
    point_id,
)

try:
    from qdrant_client import QdrantClient
    from qdrant_client import models as qm
    from qdrant_client.common.client_exceptions import QdrantException
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ConnectorError(f"vector memory needs qdrant-client ({exc.name} is missing): "
                         "pip install 'aios[vector]'") from exc

_KEYWORD_FIELDS = ("project", "scope", "scope_id", "kind", "role", "task_id", "privacy")
_UPSERT_BATCH = 256
_LOCAL_OVERFETCH = 20


class VectorMemory:
    """Embedded memories in one Qdrant collection. Build with :meth:`local` or :meth:`server`."""

    def __init__(
        self,
        client: QdrantClient,
        *,
        local: bool,
        where: str,
        embedder: Embedder | None = None,
        collection: str | None = None,
        prefix: str = "aios",
        dimension: int | None = None,
    ) -> None:
        self._client = client
        self.is_local = local
        self.where = where  # for messages: the folder or the URL
        self.embedder = embedder
        self.collection = collection or collection_name(prefix)
        if dimension is None:
            dimension = embedder.dimension if embedder is not None else DEFAULT_DIMENSION
        if embedder is not None and embedder.dimension != dimension:
            raise ConnectorError(f"dimension={dimension} but the embedder gives {embedder.dimension}-d vectors")
        self.dimension = dimension

    @classmethod
    def local(cls, path: Path | str, **kwargs: Any) -> VectorMemory:
        """Open qdrant-client local mode on a folder (one open client per folder at a time)."""
        folder = Path(path).expanduser()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            client = QdrantClient(path=str(folder))
        except RuntimeError as exc:  # the folder lock is held by another client
            raise StoreUnavailableError(
                f"Qdrant local storage {folder} is in use by another process or client: {exc}. "
                "Close it first, or set AIOS_QDRANT_URL to share a Qdrant server"
            ) from exc
        except (OSError, ValueError) as exc:
            raise ConnectorError(f"Qdrant local storage {folder} cannot be opened: {exc}") from exc
        return cls(client, local=True, where=str(folder), **kwargs)

    @classmethod
    def server(cls, url: str, *, api_key: str | None = None, timeout_s: float = 10.0,
               **kwargs: Any) -> VectorMemory:
        """Connect to a Qdrant server; nothing is sent until the first call."""
        # The version check would only warn on an outage; ensure_collection() reports it clearly.
        client = QdrantClient(url=url, api_key=api_key, timeout=int(max(1, timeout_s)),
                              check_compatibility=False)
        return cls(client, local=False, where=url, **kwargs)

    @contextmanager
    def _mapped(self, action: str) -> Iterator[None]:
        """Turn qdrant-client errors into the connector error tree."""
        try:
            yield
        except ResponseHandlingException as exc:
            raise StoreUnavailableError(
                f"Qdrant at {self.where} is not reachable ({action}): {exc.source!r}. "
                "Check AIOS_QDRANT_URL or unset it to use local storage"
            ) from exc
        except UnexpectedResponse as exc:
            status = exc.status_code or 0
            error = StoreUnavailableError if status >= 500 or status in (408, 429) else StoreQueryError
            raise error(f"Qdrant at {self.where} refused {action}: {exc}") from exc
        except QdrantException as exc:
            raise StoreUnavailableError(f"Qdrant at {self.where} failed {action}: {exc}") from exc
        except (ValueError, KeyError) as exc:  # local mode validates with these
            raise StoreQueryError(f"Qdrant at {self.where} rejected {action}: {exc}") from exc
        except RuntimeError as exc:  # local mode after close()
            raise StoreUnavailableError(f"Qdrant at {self.where} failed {action}: {exc}") from exc

    def ensure_collection(self) -> bool:
        """Create the collection if missing, as an alias of its first generation; True when created.

        An existing collection with another vector size is an error, never silently reused.
        """
        with self._mapped(f"to check collection {self.collection}"):
            exists = self._client.collection_exists(self.collection)
        if exists:
            self._check_dimension()
            return False
        generation = self.generation(uuid.uuid4().hex[:8])
        generation.create()
        try:
            self._point_alias(generation.collection, previous=None)
        except StoreQueryError:  # another process created the alias first: use theirs
            generation.drop()
            self._check_dimension()
            return False
        return True

    def generation(self, tag: str) -> VectorMemory:
        """A new generation of this collection (``<name>--<tag>``), on the same client; not yet created."""
        return self.with_collection(f"{self.collection}--{tag}")

    def create(self) -> None:
        """Create this collection under its own name (no alias), with the payload indexes."""
        with self._mapped(f"to create collection {self.collection}"):
            self._client.create_collection(
                self.collection, vectors_config=qm.VectorParams(size=self.dimension, distance=qm.Distance.COSINE))
            # Local mode scans exhaustively and would only warn that indexes do nothing.
            if not self.is_local:
                for name in _KEYWORD_FIELDS:
                    self._client.create_payload_index(self.collection, name, qm.PayloadSchemaType.KEYWORD)
                self._client.create_payload_index(self.collection, "ts", qm.PayloadSchemaType.INTEGER)

    def target(self) -> str:
        """The generation collection the name points at (the name itself for a pre-alias collection)."""
        with self._mapped("to list aliases"):
            aliases = self._client.get_aliases().aliases
        return next((a.collection_name for a in aliases if a.alias_name == self.collection), self.collection)

    def swap_in(self, generation: VectorMemory) -> str:
        """Point the name at ``generation``'s collection in one alias operation, then drop the old one.

        Readers see the old points until the swap and the new ones after it, never a mix. Returns
        the dropped collection. A collection made before aliases (a real collection under the name)
        is dropped first, a short gap once.
        """
        old = self.target()
        if old == self.collection:
            with self._mapped(f"to drop the pre-alias collection {old}"):
                self._client.delete_collection(old)
            self._point_alias(generation.collection, previous=None)
        else:
            self._point_alias(generation.collection, previous=self.collection)
            with self._mapped(f"to drop collection {old}"):
                self._client.delete_collection(old)
        return old

    def _point_alias(self, collection: str, *, previous: str | None) -> None:
        ops: list[qm.CreateAliasOperation | qm.DeleteAliasOperation] = []
        if previous is not None:
            ops.append(qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name=previous)))
        ops.append(qm.CreateAliasOperation(create_alias=qm.CreateAlias(collection_name=collection,
                                                                      alias_name=self.collection)))
        with self._mapped(f"to point alias {self.collection} at {collection}"):
            self._client.update_collection_aliases(change_aliases_operations=ops)

    def _check_dimension(self) -> None:
        with self._mapped(f"to read collection {self.collection}"):
            info = self._client.get_collection(self.collection)
        vectors = info.config.params.vectors
        size = vectors.size if isinstance(vectors, qm.VectorParams) else None
        if size != self.dimension:
            raise StoreQueryError(
                f"Qdrant collection {self.collection} at {self.where} holds {size}-d vectors but the "
                f"embedder gives {self.dimension}-d: use another collection name or recreate() it"
            )

    def recreate(self) -> None:
        """Drop the collection and create it empty (for a full re-index)."""
        self.drop()
        self.ensure_collection()

    def upsert(self, items: Sequence[MemoryItem], vectors: NDArray[np.float32] | None = None) -> int:
        """Index ``items`` (embedding their texts unless ``vectors`` is given); returns how many.

        Re-upserting a memory id overwrites its point, so replays never duplicate.
        """
        if not items:
            return 0
        if vectors is None:
            vectors = self._embedder().embed([item.text if item.embed_text is None else item.embed_text
                                              for item in items])
        if vectors.shape != (len(items), self.dimension):
            raise ValueError(f"vectors have shape {vectors.shape}, expected ({len(items)}, {self.dimension})")
        for start in range(0, len(items), _UPSERT_BATCH):
            points = [
                qm.PointStruct(id=point_id(item.memory_id), vector=vector.tolist(), payload=item.payload())
                for item, vector in zip(items[start : start + _UPSERT_BATCH],
                                        vectors[start : start + _UPSERT_BATCH], strict=True)
            ]
            with self._mapped(f"to upsert {len(points)} points into {self.collection}"):
                self._client.upsert(self.collection, points=points, wait=True)
        return len(items)

    def search(
        self,
        query: str | Sequence[float] | NDArray[np.float32],
        top_k: int = 5,
        *,
        project: str | None = None,
        scope: str | None = None,
        scope_id: str | None = None,
        kind: str | None = None,
        score_threshold: float | None = None,
        exclude_privacy: str | None = None,
    ) -> list[Recall]:
        """The ``top_k`` memories most similar to ``query`` (a text or a vector), best first; none
        whose privacy is ``exclude_privacy`` (points without one count as normal)."""
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        if isinstance(query, str):
            vector = self._embedder().embed([query])[0].tolist()
        else:
            vector = np.asarray(query, dtype=np.float32).reshape(-1).tolist()
        if len(vector) != self.dimension:
            raise ValueError(f"query vector has {len(vector)} dimensions, expected {self.dimension}")
        wanted = {k: v for k, v in (("project", project), ("scope", scope), ("scope_id", scope_id),
                                    ("kind", kind)) if v is not None}
        if self.is_local and (wanted or exclude_privacy):
            hits = self._local_prefilter(vector, top_k, wanted, score_threshold, exclude_privacy)
            if hits is not None:
                return hits
        with self._mapped(f"to search {self.collection}"):
            result = self._client.query_points(
                self.collection,
                query=vector,
                limit=top_k,
                query_filter=_filter(exclude_privacy, **wanted),
                score_threshold=score_threshold,
                with_payload=True,
            )
        return [_recall(point) for point in result.points]

    def _local_prefilter(self, vector: list[float], top_k: int, wanted: Mapping[str, str],
                         score_threshold: float | None, exclude_privacy: str | None) -> list[Recall] | None:
        """Local mode checks a filter in Python point by point (~20 us each: 200 ms at 10k points),
        but ranks unfiltered points with numpy. So: rank the best ``top_k * 20`` unfiltered and
        filter those. That is exact when ``top_k`` of them match (any other match scores lower),
        or when the candidates run out or drop below the threshold; otherwise None (search filtered).
        """
        limit = top_k * _LOCAL_OVERFETCH
        with self._mapped(f"to search {self.collection}"):
            points = self._client.query_points(self.collection, query=vector, limit=limit, with_payload=True).points
        floor = -2.0 if score_threshold is None else score_threshold
        matches = [p for p in points if p.score >= floor
                   and all((p.payload or {}).get(k) == v for k, v in wanted.items())
                   and (exclude_privacy is None or (p.payload or {}).get("privacy") != exclude_privacy)]
        if len(matches) >= top_k or len(points) < limit or points[-1].score < floor:
            return [_recall(p) for p in matches[:top_k]]
        return None

    def count(self, *, project: str | None = None, scope: str | None = None,
              scope_id: str | None = None, kind: str | None = None) -> int:
        """Exact number of points, optionally under the same filters as :meth:`search`."""
        with self._mapped(f"to count {self.collection}"):
            result = self._client.count(
                self.collection,
                count_filter=_filter(None, project=project, scope=scope, scope_id=scope_id, kind=kind),
                exact=True,
            )
        return int(result.count)

    def delete(self, memory_ids: Sequence[str]) -> None:
        """Remove memories by memory id (missing ids are ignored)."""
        if not memory_ids:
            return
        with self._mapped(f"to delete {len(memory_ids)} points from {self.collection}"):
            self._client.delete(self.collection, points_selector=[point_id(m) for m in memory_ids], wait=True)

    def with_collection(self, collection: str) -> VectorMemory:
        """Another collection on the same client (local mode allows one client per folder)."""
        return VectorMemory(self._client, local=self.is_local, where=self.where, embedder=self.embedder,
                            collection=collection, dimension=self.dimension)

    def drop(self) -> None:
        """Delete the collection (the generation behind the name, and the alias) and every point in it."""
        target = self.target()
        with self._mapped(f"to drop collection {target}"):
            if target != self.collection:
                self._client.update_collection_aliases(change_aliases_operations=[
                    qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name=self.collection))])
            self._client.delete_collection(target)

    def copy_from(self, source: VectorMemory, *, except_scope: str | None = None) -> int:
        """Copy every point (vector and payload) of ``source``'s collection into this one, or all
        but those of ``except_scope``."""
        copied = 0
        offset: Any = None
        keep = None if except_scope is None else qm.Filter(must_not=[
            qm.FieldCondition(key="scope", match=qm.MatchValue(value=except_scope))])
        while True:
            with self._mapped(f"to read collection {source.collection}"):
                points, offset = self._client.scroll(source.collection, limit=_UPSERT_BATCH, offset=offset,
                                                     scroll_filter=keep, with_payload=True, with_vectors=True)
            if points:
                batch = [qm.PointStruct(id=p.id, vector=p.vector, payload=p.payload) for p in points]  # type: ignore[arg-type]
                with self._mapped(f"to upsert {len(batch)} points into {self.collection}"):
                    self._client.upsert(self.collection, points=batch, wait=True)
                copied += len(batch)
            if offset is None:
                return copied

    def close(self) -> None:
        """Release the client (and, in local mode, the folder lock), and a provider embedder's."""
        self._client.close()
        close = getattr(self.embedder, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> VectorMemory:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _embedder(self) -> Embedder:
        if self.embedder is None:
            raise ConnectorError("this VectorMemory has no embedder: pass vectors, or build it with embedder=")
        return self.embedder


def _filter(exclude_privacy: str | None, **values: str | None) -> qm.Filter | None:
    must: list[qm.Condition] = [
        qm.FieldCondition(key=key, match=qm.MatchValue(value=value))
        for key, value in values.items()
        if value is not None
    ]
    must_not: list[qm.Condition] = [] if exclude_privacy is None else [
        qm.FieldCondition(key="privacy", match=qm.MatchValue(value=exclude_privacy))]
    return qm.Filter(must=must or None, must_not=must_not or None) if must or must_not else None


def _recall(point: qm.ScoredPoint) -> Recall:
    payload = dict(point.payload or {})
    return Recall(
        id=str(payload.get("memory_id", point.id)),
        score=float(point.score),
        text=str(payload.get("text", "")),
        payload=payload,
    )
