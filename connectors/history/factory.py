"""Choose the history store: a ClickHouse server when a URL is set, else embedded chdb.

Backends are imported lazily, so a process that talks to a server never loads the chdb engine.
"""

from __future__ import annotations

from pathlib import Path

from aios.connectors.errors import StoreUnavailableError
from aios.connectors.history.base import HistoryStore
from aios.connectors.local_owner import live_owner


def chdb_folder(data_dir: Path) -> Path:
    return data_dir / "chdb"


def open_store(url: str | None, data_dir: Path, *, ttl_days: int = 90, migrate: bool = True,
               create: bool = True) -> HistoryStore:
    """A server store when ``url`` is set (AIOS_CLICKHOUSE_URL); else, when ``aios up`` owns the
    chdb data directory under data_dir, the server store at the address it serves it on; else
    embedded chdb in this process.

    ``ttl_days`` is the retention written into tables the migrations create; ``migrate=False``
    leaves pending migrations to an explicit ``store.migrate()`` (``aios db migrate``).
    ``create=False`` (readers): an embedded store that does not exist yet is an error, not a new
    empty one. AIOS_DATA_DIR is relative to the current directory, and a reader run from another
    directory than ``aios up`` would otherwise answer with zeros.
    """
    from aios.connectors.history.clickhouse_store import ClickHouseServerStore

    if url:
        return ClickHouseServerStore(url, ttl_days=ttl_days, migrate=migrate)
    folder = chdb_folder(data_dir)
    owner = live_owner(folder)
    if owner is not None:
        try:
            return ClickHouseServerStore(owner.url, ttl_days=ttl_days, migrate=migrate)
        except StoreUnavailableError as exc:
            raise StoreUnavailableError(
                f"the chdb data directory {folder} is served by process {owner.pid} (aios up) at {owner.url}, "
                f"which does not answer: {exc.__cause__ or exc}. Wait for it to start, or stop it") from exc
    if not create and not folder.exists():
        raise StoreUnavailableError(
            f"no history at {folder.resolve()}: run this where `aios up` runs (AIOS_DATA_DIR is {data_dir}, "
            "relative to the current directory), or set AIOS_DATA_DIR or AIOS_CLICKHOUSE_URL")
    from aios.connectors.history.chdb_store import ChdbStore

    return ChdbStore.open(folder, ttl_days=ttl_days, migrate=migrate)
