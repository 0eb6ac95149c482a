"""The history store: one interface, two ClickHouse engines (embedded chdb or a server)."""

from aios.connectors.history.base import EventRow, HistoryStore
from aios.connectors.history.factory import open_store

__all__ = ["EventRow", "HistoryStore", "open_store"]
