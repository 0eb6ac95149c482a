"""A ClickHouse server through clickhouse-connect (AIOS_CLICKHOUSE_URL), same schema as chdb."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aios.connectors.errors import StoreQueryError, StoreUnavailableError
from aios.connectors.history.base import HistoryStore
from aios.connectors.history.ingest import INGEST_INSERT_SETTINGS
from aios.connectors.history.migrations import DATABASE


class ClickHouseServerStore(HistoryStore):
    engine = "clickhouse-server"

    def __init__(self, url: str, *, ttl_days: int = 90, migrate: bool = True) -> None:
        import clickhouse_connect
        from clickhouse_connect.driver.exceptions import OperationalError

        self.url = url
        self.ttl_days = ttl_days
        try:
            # No session: the sink's inserts and the API's and stats' queries share this client
            # from several threads, and ClickHouse refuses concurrent queries in one session.
            self._client = clickhouse_connect.get_client(dsn=url, connect_timeout=5, autogenerate_session_id=False)
        except OperationalError as exc:
            raise StoreUnavailableError(
                f"ClickHouse at AIOS_CLICKHOUSE_URL is not reachable: {exc}. "
                "Unset AIOS_CLICKHOUSE_URL to use the embedded chdb store"
            ) from exc
        if migrate:
            self.setup()

    def _command(self, sql: str) -> Any:
        from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

        try:
            return self._client.command(sql)
        except OperationalError as exc:
            raise StoreUnavailableError(f"ClickHouse unreachable: {exc}") from exc
        except DatabaseError as exc:
            raise StoreQueryError(f"ClickHouse: {exc}") from exc

    def execute(self, sql: str) -> None:
        self._command(sql)

    def insert_json(self, table: str, columns: Sequence[str], lines: Sequence[str]) -> None:
        if not lines:
            return
        from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

        body = "\n".join(lines).encode()
        try:
            self._client.raw_insert(f"{DATABASE}.{table}", column_names=list(columns), insert_block=body,
                                    settings={"input_format_skip_unknown_fields": 1}, fmt="JSONEachRow")
        except OperationalError as exc:
            raise StoreUnavailableError(f"ClickHouse insert failed: {exc}") from exc
        except DatabaseError as exc:
            raise StoreQueryError(f"ClickHouse: {exc}") from exc

    def insert_native(self, table: str, structure: str, blocks: bytes) -> None:
        from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

        try:  # the INSERT's own column list is the table's, so the blocks' columns match by name
            self._client.raw_insert(f"{DATABASE}.{table}", insert_block=blocks, fmt="Native",
                                    settings=dict(INGEST_INSERT_SETTINGS))
        except OperationalError as exc:
            raise StoreUnavailableError(f"ClickHouse insert failed: {exc}") from exc
        except DatabaseError as exc:
            raise StoreQueryError(f"ClickHouse: {exc}") from exc

    def query(self, sql: str) -> list[dict[str, Any]]:
        from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

        try:
            result = self._client.query(sql)
        except OperationalError as exc:
            raise StoreUnavailableError(f"ClickHouse unreachable: {exc}") from exc
        except DatabaseError as exc:
            raise StoreQueryError(f"ClickHouse: {exc}") from exc
        return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]

    def close(self) -> None:
        self._client.close()
