"""Embedded ClickHouse through chdb: in-process, on disk, one data directory per process."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from connectors.errors import ConnectorError, StoreQueryError
from connectors.history.base import DATABASE, DDL, EventRow, HistoryStore


class ChdbStore(HistoryStore):
    """chdb allows a single data path per process, so stores are shared per path."""

    engine = "chdb"
    _open: ClassVar[dict[Path, ChdbStore]] = {}
    _guard: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: Path) -> None:
        from chdb import session

        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        try:
            self._session = session.Session(str(path))
        except RuntimeError as exc:
            raise ConnectorError(
                f"chdb cannot open {path}: {exc}. One process may use one chdb data directory; "
                "stop the other AIOS process or set AIOS_DATA_DIR"
            ) from exc
        self._lock = threading.Lock()  # chdb sessions are not safe for concurrent queries

    @classmethod
    def open(cls, path: Path) -> ChdbStore:
        key = path.resolve()
        with cls._guard:
            store = cls._open.get(key)
            if store is None:
                store = cls(key)
                store.setup()
                cls._open[key] = store
            return store

    def _run(self, sql: str, fmt: str = "CSV") -> Any:
        with self._lock:
            try:
                return self._session.query(sql, fmt)
            except Exception as exc:  # chdb raises a plain RuntimeError/ChdbError for SQL errors
                raise StoreQueryError(f"chdb: {exc}") from exc

    def setup(self) -> None:
        for statement in DDL:
            self._run(statement)

    def insert(self, rows: Sequence[EventRow]) -> None:
        if not rows:
            return
        body = "\n".join(row.to_json() for row in rows)
        self._run(f"INSERT INTO {DATABASE}.events FORMAT JSONEachRow\n{body}")

    def query(self, sql: str) -> list[dict[str, Any]]:
        result = self._run(sql, "JSONEachRow")
        text = result.bytes().decode() if hasattr(result, "bytes") else str(result)
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def close(self) -> None:
        # The embedded server lives as long as the process; closing would forbid reopening.
        pass
