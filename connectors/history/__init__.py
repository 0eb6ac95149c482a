"""The history store: one interface, two ClickHouse engines (embedded chdb or a server)."""

from connectors.history.base import EventRow, HistoryStore, open_store

__all__ = ["EventRow", "HistoryStore", "open_store"]
