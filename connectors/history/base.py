"""The history store interface and the one SQL schema both engines share."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

DATABASE = "aios"

# Every decoded event lands as one row; ReplacingMergeTree on event_id makes re-delivery
# (at-least-once sinks, replays) converge to one row per event.
DDL = [
    f"CREATE DATABASE IF NOT EXISTS {DATABASE}",
    f"""CREATE TABLE IF NOT EXISTS {DATABASE}.events (
        event_id String,
        event_type LowCardinality(String),
        topic LowCardinality(String),
        partition UInt32,
        offset UInt64,
        ts DateTime64(3, 'UTC'),
        trace_id String,
        task_id String,
        project_id String,
        role LowCardinality(String),
        status LowCardinality(String),
        payload String
    ) ENGINE = ReplacingMergeTree
    PARTITION BY toYYYYMM(ts)
    ORDER BY (event_type, event_id)""",
]


@dataclass(frozen=True)
class EventRow:
    """One event as stored; ``ts`` is epoch milliseconds, ``payload`` the event as JSON."""

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
        row = asdict(self)
        row["ts"] = self.ts / 1000.0  # DateTime64(3) accepts fractional epoch seconds
        return json.dumps(row, separators=(",", ":"))


class HistoryStore(ABC):
    """What the history sink and the CLI need from ClickHouse."""

    engine: str

    @abstractmethod
    def setup(self) -> None:
        """Create the database and tables (idempotent)."""

    @abstractmethod
    def insert(self, rows: Sequence[EventRow]) -> None:
        """Insert a batch; raises StoreUnavailableError when the store cannot be reached."""

    @abstractmethod
    def query(self, sql: str) -> list[dict[str, Any]]:
        """Run a SELECT and return rows as dicts."""

    @abstractmethod
    def close(self) -> None: ...

    def count_events(
        self, *, task_id: str | None = None, project_id: str | None = None, event_type: str | None = None
    ) -> int:
        """Distinct stored events (FINAL collapses redelivered duplicates)."""
        clause = _where(task_id=task_id, project_id=project_id, event_type=event_type)
        sql = f"SELECT count() AS n FROM {DATABASE}.events FINAL{clause}"  # noqa: S608 - values quoted by _where
        rows = self.query(sql)
        return int(rows[0]["n"]) if rows else 0

    def counts_by_type(self, *, project_id: str | None = None) -> dict[str, int]:
        clause = _where(project_id=project_id)
        sql = (
            f"SELECT event_type, count() AS n FROM {DATABASE}.events FINAL{clause} "  # noqa: S608 - quoted
            "GROUP BY event_type ORDER BY event_type"
        )
        return {str(r["event_type"]): int(r["n"]) for r in self.query(sql)}


def _where(**equals: str | None) -> str:
    parts = [f"{column} = {_quote(value)}" for column, value in equals.items() if value is not None]
    return f" WHERE {' AND '.join(parts)}" if parts else ""


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def open_store(url: str | None, data_dir: Path) -> HistoryStore:
    """A server store when ``url`` is set (AIOS_CLICKHOUSE_URL), else embedded chdb under data_dir."""
    if url:
        from connectors.history.clickhouse_store import ClickHouseServerStore

        return ClickHouseServerStore(url)
    from connectors.history.chdb_store import ChdbStore

    return ChdbStore.open(data_dir / "chdb")
