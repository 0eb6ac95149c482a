"""The history store interface and the one SQL schema both engines share."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from aios.connectors.history import transcode
from aios.connectors.history.ingest import IngestTable, ensure_ingest
from aios.connectors.history.migrations import DATABASE, MigrationReport, migrate
from aios.connectors.history.sql import quote, where

log = logging.getLogger(__name__)

# Each event type's typed table (see migrations.py), which holds all its fields; every event also
# lands in ``events``, with its JSON payload only when its type has no typed table.
TYPED_TABLES = {
    "Task": "tasks",
    "Assignment": "assignments",
    "TaskResult": "results",
    "AgentMessage": "messages",
    "MemoryEvent": "memory",
    "LlmCall": "llm_calls",
    "AgentStatus": "agent_status",
    "DeadLetter": "dead_letters",
}
ROLLUPS = ("task_states_1m", "latency_1m", "llm_usage_1m", "failures_1m")  # per-minute views (migrations)
HOP_COLUMNS = ("topic", "partition", "offset", "ts", "producer", "traceparent")
EVENT_COLUMNS = ("event_id", "event_type", "topic", "partition", "offset", "ts", "trace_id", "task_id",
                 "project_id", "role", "status", "payload")


@dataclass(frozen=True)
class EventRow:
    """One event as decoded by Python; ``ts`` is epoch milliseconds, ``payload`` the event as JSON
    (with its record's ``topic`` too when it is typed: see ``writer.to_row``).

    The JSON fills the event's typed table; ``events`` keeps it only for untyped record types.
    """

    event_id: str
    event_type: str
    topic: str
    partition: int
    offset: int
    ts: int
    trace_id: str
    task_id: str
    project_id: str
    role: str
    status: str
    payload: str

    def to_json(self) -> str:
        row = dict(self.__dict__)  # not asdict(): it deep-copies, and this runs per stored event
        row["ts"] = self.ts / 1000.0  # DateTime64(3) accepts fractional epoch seconds
        if self.event_type in TYPED_TABLES:
            row["payload"] = ""  # stored once, in the typed table
        return orjson.dumps(row).decode()


class HistoryStore(ABC):
    """What the history sink and the CLI need from ClickHouse.

    Backends implement ``execute``, ``insert_json`` and ``query``; the schema (migrations) and the
    split of a batch into the typed tables are the same for every engine.
    """

    engine: str
    ttl_days: int = 90
    _columns: dict[str, tuple[str, ...]] | None = None
    # Record types stored through the ingest table (see ingest.py), by full record name, and the
    # encoder of their Native blocks; set by setup(). A store without them (not set up, a test
    # double, or no transcoder) takes every event through insert().
    ingest: dict[str, IngestTable] = {}  # replaced per instance by setup(), never mutated
    encoder: transcode.NativeEncoder | None = None

    @abstractmethod
    def execute(self, sql: str) -> None:
        """Run a statement that returns nothing (DDL, INSERT … VALUES)."""

    @abstractmethod
    def insert_json(self, table: str, columns: Sequence[str], lines: Sequence[str]) -> None:
        """One INSERT of JSONEachRow ``lines`` into ``aios.<table>`` (unknown JSON keys are skipped).

        Raises StoreUnavailableError when the store cannot be reached.
        """

    @abstractmethod
    def insert_native(self, table: str, structure: str, blocks: bytes) -> None:
        """One INSERT of ClickHouse Native ``blocks`` into ingest table ``aios.<table>``, whose
        columns are ``structure``; a block may carry some of them only (the rest take defaults).

        Raises StoreUnavailableError when the store cannot be reached, StoreQueryError when it
        rejects the data.
        """

    @abstractmethod
    def query(self, sql: str) -> list[dict[str, Any]]:
        """Run a SELECT and return rows as dicts."""

    @abstractmethod
    def close(self) -> None: ...

    def migrate(self) -> MigrationReport:
        """Apply pending schema migrations (idempotent) and learn the typed tables' input columns."""
        report = migrate(self.execute, self.query, self.ttl_days)
        self._columns = self._input_columns()
        return report

    def setup(self) -> None:
        """Create or upgrade the schema, then the ingest tables of the current schemas (idempotent)."""
        from aios.schemas.codec import load_catalog

        self.migrate()
        current = [(schema.raw, schema.fingerprint) for schema in load_catalog().current.values()]
        self.ingest = ensure_ingest(self.execute, self.query, current, TYPED_TABLES)
        self.encoder = transcode.NativeEncoder(self.ingest) if self.ingest and transcode.AVAILABLE else None
        if self.ingest and not transcode.AVAILABLE:
            log.warning("the aios_transcoder extension is not installed (run `make install`): the history "
                        "sink decodes every event in Python, about twenty times slower")

    def _input_columns(self) -> dict[str, tuple[str, ...]]:
        # Columns a JSON event fills: plain and EPHEMERAL ones, not those computed from them (ts).
        tables = ", ".join(f"'{t}'" for t in TYPED_TABLES.values())
        rows = self.query(
            "SELECT table, name FROM system.columns "  # noqa: S608 - constant names
            f"WHERE database = '{DATABASE}' AND table IN ({tables}) AND default_kind IN ('', 'EPHEMERAL') "
            "ORDER BY table, position"
        )
        columns: dict[str, list[str]] = {}
        for row in rows:
            columns.setdefault(str(row["table"]), []).append(str(row["name"]))
        return {table: tuple(names) for table, names in columns.items()}

    def insert(self, rows: Sequence[EventRow]) -> None:
        """Store a batch: one INSERT into ``events`` and one into each typed table it touches.

        A retry after a partial failure re-inserts rows already stored; ReplacingMergeTree on
        event_id makes that harmless.
        """
        if not rows:
            return
        self.insert_json("events", EVENT_COLUMNS, [row.to_json() for row in rows])
        by_table: dict[str, list[str]] = {}
        for row in rows:
            table = TYPED_TABLES.get(row.event_type)
            if table is not None:
                by_table.setdefault(table, []).append(row.payload)
        columns = self._columns if self._columns is not None else self._input_columns()
        for table, lines in by_table.items():
            self.insert_json(table, columns[table], lines)

    def insert_hops(self, lines: Sequence[str]) -> None:
        """Store records' producing process and traceparent (JSONEachRow of HOP_COLUMNS)."""
        if lines:
            self.insert_json("hops", HOP_COLUMNS, lines)

    def count_events(
        self, *, task_id: str | None = None, project_id: str | None = None, event_type: str | None = None
    ) -> int:
        """Distinct stored events (FINAL collapses redelivered duplicates)."""
        clause = where(task_id=task_id, project_id=project_id, event_type=event_type)
        sql = f"SELECT count() AS n FROM {DATABASE}.events FINAL{clause}"  # noqa: S608 - values quoted by where()
        rows = self.query(sql)
        return int(rows[0]["n"]) if rows else 0

    def counts_by_type(self, *, project_id: str | None = None) -> dict[str, int]:
        clause = where(project_id=project_id)
        sql = (
            f"SELECT event_type, count() AS n FROM {DATABASE}.events FINAL{clause} "  # noqa: S608 - quoted
            "GROUP BY event_type ORDER BY event_type"
        )
        return {str(r["event_type"]): int(r["n"]) for r in self.query(sql)}

    def truncate_all(self) -> None:
        """Empty every history table and rollup (benchmarks start from nothing)."""
        for table in ("events", "hops", *TYPED_TABLES.values(), *ROLLUPS):
            self.execute(f"TRUNCATE TABLE IF EXISTS {DATABASE}.{table}")

    def stored_columns(self, table: str) -> list[str]:
        """The columns of ``table`` that hold data (not the EPHEMERAL inputs of computed ones)."""
        rows = self.query(
            f"SELECT name FROM system.columns WHERE database = '{DATABASE}' AND table = {quote(table)} "  # noqa: S608
            "AND default_kind != 'EPHEMERAL' ORDER BY position")
        return [str(r["name"]) for r in rows]

    def export_native(self, table: str, path: Path) -> str | None:
        """Write ``table``'s rows to ``path`` in ClickHouse's Native format; return the column list
        (for :meth:`import_native`), or None when the table is empty."""
        columns = ", ".join(self.stored_columns(table))
        self.execute(f"INSERT INTO FUNCTION file({quote(str(path))}, 'Native') "  # noqa: S608 - quoted, our names
                     f"SELECT {columns} FROM {DATABASE}.{table}")
        rows = self.query(f"SELECT count() AS n FROM {DATABASE}.{table}")  # noqa: S608 - our names
        return columns if path.stat().st_size > 0 and int(rows[0]["n"]) else None

    def import_native(self, table: str, columns: str, path: Path) -> None:
        """Insert a Native file written by :meth:`export_native`, with the sink's INSERT settings."""
        self.execute(f"INSERT INTO {DATABASE}.{table} ({columns}) "  # noqa: S608 - quoted, our names
                     f"SELECT {columns} FROM file({quote(str(path))}, 'Native') "
                     "SETTINGS parallel_view_processing = 1, optimize_on_insert = 0")
