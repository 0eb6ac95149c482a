"""Native Avro ingest: ClickHouse decodes the events, Python only moves bytes.

Decoding Avro into Python dicts costs 20-50 µs per event, which caps one core far below the sink's
target. ClickHouse reads Avro natively, so the sink frames each event's Avro body into an Avro
object container and inserts that into an *ingest table* of its record type:

- the ingest table (``ENGINE = Null``, so it stores nothing) has one column per field of the
  record's current schema, plus ``_topic``, ``_partition`` and ``_offset``;
- one materialised view copies each row into the typed table (``tasks``, ``results``, …), whose
  own rollup views then fire as before;
- another builds the ``events`` row, with the event as JSON in ``payload``.

The objects are derived from the ``.avsc`` file and the typed table, hold no data, and are named
after a hash of their own DDL: a schema change creates new ones beside the old rather than
altering anything a running sink may be inserting into. A record type whose schema uses Avro
types this mapping does not cover (bytes, nested records, general unions) has no ingest table;
the sink decodes those in Python as before.

Each event is its own block in the container. A block carries its byte size, so ClickHouse cannot
read one event's bytes as the next event's: a truncated body fails the insert (the sink then
sorts the batch out in Python), and trailing garbage is skipped, as fastavro skips it.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from connectors.errors import StoreQueryError
from connectors.history.migrations import DATABASE

# Kafka coordinates ride in front of the event's own fields; a record encodes as its fields in
# order, so prefixing their encodings to the body is a valid encoding of the wider record.
KAFKA_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("_topic", "string", "LowCardinality(String)"),
    ("_partition", "int", "UInt32"),
    ("_offset", "long", "UInt64"),
)
_PRIMITIVES = {"string": "String", "int": "Int32", "long": "Int64", "float": "Float32", "double": "Float64",
               "boolean": "Bool"}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # Avro's name rule; names go into SQL unquoted
_DEFAULTS = {"String": "''", "Bool": "false"}
# events.status: the first of these fields the record has (as HistorySink.to_row picks it).
_STATUS_FIELDS = ("status", "state", "outcome")


def clickhouse_type(avro: Any) -> str | None:
    """The column type an Avro type maps to, or None when this mapping does not cover it.

    bytes is left out on purpose: the JSON payload must carry it as base64, as the Python path
    writes it, and ClickHouse would write the raw bytes.
    """
    if isinstance(avro, str):
        return _PRIMITIVES.get(avro)
    if isinstance(avro, list):
        kinds = [t for t in avro if t != "null"]
        if len(avro) != 2 or len(kinds) != 1:
            return None
        inner = clickhouse_type(kinds[0])
        return f"Nullable({inner})" if inner and not inner.startswith(("Array", "Map")) else None
    if isinstance(avro, dict):
        kind = avro.get("type")
        if kind == "long" and avro.get("logicalType") == "timestamp-millis":
            return "Int64"  # epoch ms, as the typed tables and the JSON payload keep it
        if kind == "enum":
            return "String"
        if kind == "array":
            items = clickhouse_type(avro.get("items"))
            return f"Array({items})" if items and not items.startswith("Nullable") else None
        if kind == "map":
            values = clickhouse_type(avro.get("values"))
            return f"Map(String, {values})" if values and not values.startswith("Nullable") else None
        if isinstance(kind, str) and "logicalType" not in avro:
            return clickhouse_type(kind)
    return None


@dataclass(frozen=True)
class IngestTable:
    """Where one record type's Avro goes, and the statements that create it (idempotent)."""

    record: str  # full record name, e.g. aios.v1.Task
    fingerprint: bytes  # the current schema's; other writer versions take the Python path
    table: str
    columns: tuple[str, ...]
    structure: str  # "name Type, …": the container's records as ClickHouse columns
    container_schema: bytes  # the Avro schema (JSON) of the container's records
    statements: tuple[str, ...]


def plan_ingest(raw_schema: Mapping[str, Any], fingerprint: bytes, event_type: str,
                typed: str | None, typed_columns: Mapping[str, str]) -> IngestTable | None:
    """The ingest objects for one record type, or None when its schema cannot be mapped.

    ``typed_columns`` are the typed table's input columns and types (``timestamp`` included);
    ``typed`` is None for record types stored in ``events`` only.
    """
    if not _NAME.fullmatch(event_type):
        return None
    fields: list[tuple[str, str]] = []
    for field in raw_schema.get("fields", []):
        ch = clickhouse_type(field["type"])
        if ch is None or not _NAME.fullmatch(str(field["name"])):
            return None
        fields.append((str(field["name"]), ch))
    names = {name for name, _ in fields}
    if not {"event_id", "timestamp", "trace_id"} <= names or names & {f for f, _, _ in KAFKA_FIELDS}:
        return None
    kinds = dict(fields)

    def text(name: str) -> str:  # a string field as events wants it: '' when absent or null
        if name not in kinds:
            return "''"
        return f"ifNull({name}, '')" if kinds[name].startswith("Nullable") else name

    columns = ", ".join(f"{name} {ch}" for name, ch in (*[(f, c) for f, _, c in KAFKA_FIELDS], *fields))
    status = [text(f) for f in _STATUS_FIELDS if f in kinds]
    status_sql = f"multiIf({', '.join(f'{s} != {chr(39)}{chr(39)}, {s}' for s in status)}, '')" if status else "''"
    payload = ", ".join(name for name, _ in fields)
    events_select = f"""SELECT event_id, '{event_type}' AS event_type, _topic AS topic, _partition AS partition,
        _offset AS offset, fromUnixTimestamp64Milli(timestamp, 'UTC') AS ts, trace_id,
        {text('task_id')} AS task_id, {text('project_id')} AS project_id, {text('role')} AS role,
        {status_sql} AS status, _payload AS payload
        FROM (SELECT *, formatRowNoNewline('JSONEachRow', {payload}) AS _payload FROM {{source}})"""  # noqa: S608 - names checked
    typed_select = ""
    if typed is not None:
        parts = []
        for name, ch in typed_columns.items():
            if name == "timestamp":
                parts.append("fromUnixTimestamp64Milli(timestamp, 'UTC') AS ts")
            elif name in kinds:
                nullable_in = kinds[name].startswith("Nullable")
                if nullable_in and not ch.startswith("Nullable"):
                    parts.append(f"ifNull({name}, {_DEFAULTS.get(kinds[name][9:-1], '0')}) AS {name}")
                else:
                    parts.append(name)
        typed_select = f"SELECT {', '.join(parts)} FROM {{source}}"  # noqa: S608 - names checked above
    digest = hashlib.sha256("\n".join((columns, events_select, typed_select, str(typed))).encode()).hexdigest()
    table = f"ingest_{event_type.lower()}_{digest[:12]}"
    source = f"{DATABASE}.{table}"
    statements = [f"CREATE TABLE IF NOT EXISTS {source} ({columns}) ENGINE = Null",
                  f"CREATE MATERIALIZED VIEW IF NOT EXISTS {source}_events TO {DATABASE}.events AS "
                  + events_select.format(source=source)]
    if typed is not None:
        statements.append(f"CREATE MATERIALIZED VIEW IF NOT EXISTS {source}_typed TO {DATABASE}.{typed} AS "
                          + typed_select.format(source=source))
    container = dict(raw_schema)
    container["fields"] = [{"name": f, "type": t} for f, t, _ in KAFKA_FIELDS] + list(raw_schema["fields"])
    return IngestTable(record=f"{raw_schema.get('namespace', '')}.{raw_schema['name']}".lstrip("."),
                       fingerprint=fingerprint, table=table,
                       columns=(*[f for f, _, _ in KAFKA_FIELDS], *(name for name, _ in fields)), structure=columns,
                       container_schema=orjson.dumps(container), statements=tuple(statements))


def _varint(n: int) -> bytes:
    """Avro's zig-zag varint of a non-negative ``n``."""
    n <<= 1
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


class ContainerBuilder:
    """An Avro object container of one ingest table's records, one block per event."""

    def __init__(self, ingest: IngestTable) -> None:
        self.ingest = ingest
        self.sync = os.urandom(16)
        self._topics: dict[str, bytes] = {}
        self._parts: list[bytes] = []
        self.count = 0

    def add(self, topic: str, partition: int, offset: int, body: bytes) -> None:
        prefix = self._topics.get(topic)
        if prefix is None:
            raw = topic.encode()
            prefix = self._topics[topic] = _varint(len(raw)) + raw
        head = prefix + _varint(partition) + _varint(offset)
        # block: object count (1), byte size, the record (Kafka coordinates, then the body), sync
        self._parts.append(b"\x02" + _varint(len(head) + len(body)) + head)
        self._parts.append(body)
        self._parts.append(self.sync)
        self.count += 1

    def build(self) -> bytes:
        meta = (b"\x04" + _avro_string(b"avro.schema") + _avro_string(self.ingest.container_schema)
                + _avro_string(b"avro.codec") + _avro_string(b"null") + b"\x00")
        return b"".join((b"Obj\x01", meta, self.sync, *self._parts))


def _avro_string(raw: bytes) -> bytes:
    return _varint(len(raw)) + raw


def ensure_ingest(execute: Callable[[str], Any], query: Callable[[str], list[dict[str, Any]]],
                  schemas: Sequence[tuple[Mapping[str, Any], bytes]],
                  typed_tables: Mapping[str, str]) -> dict[str, IngestTable]:
    """Create the ingest objects of every mappable record type; return them by full record name.

    ``schemas`` are the current (raw .avsc, fingerprint) pairs; ``typed_tables`` maps a short
    record name to its typed table.
    """
    rows = query(f"SELECT table, name, type FROM system.columns WHERE database = '{DATABASE}' "  # noqa: S608
                 "AND default_kind IN ('', 'EPHEMERAL') ORDER BY table, position")
    columns: dict[str, dict[str, str]] = {}
    for row in rows:
        columns.setdefault(str(row["table"]), {})[str(row["name"])] = str(row["type"])
    out: dict[str, IngestTable] = {}
    for raw, fingerprint in schemas:
        event_type = str(raw["name"]).rsplit(".", 1)[-1]
        typed = typed_tables.get(event_type)
        if typed is not None and typed not in columns:
            raise StoreQueryError(f"typed table {DATABASE}.{typed} is missing: run `aios db migrate`")
        plan = plan_ingest(raw, fingerprint, event_type, typed, columns.get(typed or "", {}))
        if plan is None:
            continue
        for statement in plan.statements:
            execute(statement)
        out[plan.record] = plan
    return out
