"""Store selection and the unhappy paths of the history store."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from aios.connectors.errors import StoreQueryError, StoreUnavailableError
from aios.connectors.history import EventRow, open_store
from aios.connectors.history.sql import where
from aios.schemas.events import now_ms


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_clickhouse_url_selects_the_server_store_and_an_outage_is_a_clear_error() -> None:
    url = f"http://default:pw@127.0.0.1:{_closed_port()}/aios"
    with pytest.raises(StoreUnavailableError, match="AIOS_CLICKHOUSE_URL"):
        open_store(url, Path("/nonexistent"))


def test_where_quotes_values() -> None:
    assert where(task_id="a'b", project_id=None) == " WHERE task_id = 'a\\'b'"
    assert where() == ""


def test_chdb_store_round_trip_and_bad_sql(session_data_dir: Path) -> None:
    from aios.connectors.history.chdb_store import ChdbStore

    store = ChdbStore.open(session_data_dir / "chdb")  # the one chdb directory of this process
    # A recent timestamp: older rows than AIOS_HISTORY_TTL_DAYS are dropped by the table TTL.
    row = EventRow("unit-e1", "Task", "unit.tasks", 0, 1, now_ms(), "tr", "unit-t1", "unit-p",
                   "general", "", "{}")
    store.insert([row, row])
    assert store.count_events(task_id="unit-t1") == 1
    with pytest.raises(StoreQueryError):
        store.query("SELECT no_such_column FROM aios.events")


class _FakeClient:
    """Stands in for clickhouse-connect's client: records raw_insert calls or raises ``error``."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.calls: list[dict[str, object]] = []

    def raw_insert(self, table: str, **kwargs: object) -> None:
        if self.error is not None:
            raise self.error
        self.calls.append({"table": table, **kwargs})


def test_server_store_inserts_native_blocks_into_the_ingest_table_and_maps_errors() -> None:
    from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

    from aios.connectors.history.clickhouse_store import ClickHouseServerStore

    store = object.__new__(ClickHouseServerStore)  # no server here: only the insert path is under test
    store._client = _FakeClient()
    store.insert_native("ingest_x", "a String", b"blocks")
    (call,) = store._client.calls  # one body per batch: every record type's block in one INSERT
    assert call["table"] == "aios.ingest_x" and call["fmt"] == "Native" and call["insert_block"] == b"blocks"
    # the same INSERT settings as on chdb: views side by side, no in-block dedup at insert
    assert call["settings"] == {"output_format_json_quote_64bit_integers": 0,
                                "parallel_view_processing": 1, "optimize_on_insert": 0}
    store._client = _FakeClient(OperationalError("connection refused"))
    with pytest.raises(StoreUnavailableError):
        store.insert_native("ingest_x", "a String", b"")
    store._client = _FakeClient(DatabaseError("Cannot parse input"))
    with pytest.raises(StoreQueryError):
        store.insert_native("ingest_x", "a String", b"")
