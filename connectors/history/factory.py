"""Choose the history store: a ClickHouse server when a URL is set, else embedded chdb.

Backends are imported lazily, so a process that talks to a server never loads the chdb engine.
"""

from __future__ import annotations

from pathlib import Path

from aios.connectors.history.base import HistoryStore


def open_store(url: str | None, data_dir: Path, *, ttl_days: int = 90, migrate: bool = True) -> HistoryStore:
    """A server store when ``url`` is set (AIOS_CLICKHOUSE_URL), else embedded chdb under data_dir.

    ``ttl_days`` is the retention written into tables the migrations create; ``migrate=False``
    leaves pending migrations to an explicit ``store.migrate()`` (``aios db migrate``).
    """
    if url:
        from aios.connectors.history.clickhouse_store import ClickHouseServerStore

        return ClickHouseServerStore(url, ttl_days=ttl_days, migrate=migrate)
    from aios.connectors.history.chdb_store import ChdbStore

    return ChdbStore.open(data_dir / "chdb", ttl_days=ttl_days, migrate=migrate)
