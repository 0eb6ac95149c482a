"""Embedded ClickHouse through chdb: in-process, on disk, one data directory per process."""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from aios.connectors.errors import ConnectorError, StoreQueryError
from aios.connectors.history.base import HistoryStore
from aios.connectors.history.ingest import INGEST_INSERT_SETTINGS
from aios.connectors.history.migrations import DATABASE
from aios.connectors.history.sql import quote

# What the ingest INSERT runs with (ingest.INGEST_INSERT_SETTINGS), as SQL.
INGEST_SETTINGS = ", ".join(f"{name} = {value}" for name, value in INGEST_INSERT_SETTINGS.items())
_SCRATCH = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None  # noqa: S108 - private mkstemp files


class ChdbStore(HistoryStore):
    """chdb allows a single data path per process, so stores are shared per path."""

    engine = "chdb"
    _open: ClassVar[dict[Path, ChdbStore]] = {}
    _guard: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: Path, *, ttl_days: int = 90) -> None:
        from chdb import session

        self.path = path
        self.ttl_days = ttl_days
        path.mkdir(parents=True, exist_ok=True)
        try:
            self._session = session.Session(str(path))
        except RuntimeError as exc:
            raise ConnectorError(
                f"chdb cannot open {path}: {exc}. A chdb data directory belongs to one process at a "
                "time (an `aios up` or `aios worker history` may hold it): stop that process, point "
                "AIOS_DATA_DIR elsewhere, or use a ClickHouse server (AIOS_CLICKHOUSE_URL)"
            ) from exc
        self._lock = threading.Lock()  # chdb sessions are not safe for concurrent queries

    @classmethod
    def open(cls, path: Path, *, ttl_days: int = 90, migrate: bool = True) -> ChdbStore:
        """The process's store for ``path``; ``migrate`` applies pending migrations on first use."""
        key = path.resolve()
        with cls._guard:
            store = cls._open.get(key)
            if store is None:
                store = cls(key, ttl_days=ttl_days)
                cls._open[key] = store
            if migrate and store._columns is None:
                store.setup()
            return store

    def _run(self, sql: str, fmt: str = "CSV") -> Any:
        with self._lock:
            try:
                return self._session.query(sql, fmt)
            except Exception as exc:  # chdb raises a plain RuntimeError/ChdbError for SQL errors
                raise StoreQueryError(f"chdb: {exc}") from exc

    def execute(self, sql: str) -> None:
        self._run(sql)

    def insert_json(self, table: str, columns: Sequence[str], lines: Sequence[str]) -> None:
        if not lines:
            return
        body = "\n".join(lines)
        self._run(f"INSERT INTO {DATABASE}.{table} ({', '.join(columns)}) "
                  f"SETTINGS input_format_skip_unknown_fields = 1 FORMAT JSONEachRow\n{body}")

    def insert_native(self, table: str, structure: str, blocks: bytes) -> None:
        # chdb takes no binary data with a query, so the blocks go into a file (in memory where
        # /dev/shm exists) that the INSERT reads; columns a block lacks take their defaults.
        with tempfile.NamedTemporaryFile(prefix="aios-sink-", suffix=".native", dir=_SCRATCH) as scratch:
            scratch.write(blocks)
            scratch.flush()
            self._run(f"INSERT INTO {DATABASE}.{table} SELECT * "  # noqa: S608 - our names
                      f"FROM file({quote(scratch.name)}, 'Native', {quote(structure)}) "
                      f"SETTINGS {INGEST_SETTINGS}")

    def query(self, sql: str) -> list[dict[str, Any]]:
        result = self._run(sql, "JSONEachRow")
        text = result.bytes().decode() if hasattr(result, "bytes") else str(result)
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def close(self) -> None:
        # The embedded server lives as long as the process; closing would forbid reopening.
        pass
