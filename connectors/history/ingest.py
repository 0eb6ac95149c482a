"""Native ingest: the events' fields reach ClickHouse as columns, and Python only moves bytes.

Decoding Avro into Python dicts costs 20-50 µs per event, which caps one core far below the sink's
target, and ClickHouse's own Avro reader cost more CPU than the rest of the INSERT. So the
``aios_transcoder`` extension (Rust, transcoder/) reads each event's Avro body with a plan derived
here from its record type's schema and writes the batch as ClickHouse Native blocks, one per record
type, into one *ingest table*:

- the ingest table (``ENGINE = Null``, so it stores nothing) has one column per field of every
  mapped record type's current schema (Nullable where any type's field is), plus ``_type`` (the
  short record name) and ``_topic``, ``_partition``, ``_offset``; a block fills its own type's
  columns and ClickHouse gives the rest their defaults;
- one materialised view per typed table copies its type's rows there (``tasks``, ``results``, …),
  whose own rollup views then fire as before;
- another builds every ``events`` row, with the event as JSON (its own type's fields) in ``payload``
  when its type has no typed table.

One table for all types lets a whole batch be stored with one INSERT: ClickHouse pays 15-25 ms per
INSERT (a pipeline per view, a part per target table) whatever its size.

The objects are derived from the ``.avsc`` files and the typed tables, hold no data, and are named
after a hash of their own DDL: a schema change creates new ones beside the old rather than
altering anything a running sink may be inserting into. A record type whose schema uses Avro
types this mapping does not cover (bytes, nested records, general unions), or whose field types
clash with another type's, is left out; the sink decodes those in Python.

The transcoder checks each body whole before it copies it (bounds, union and enum indexes, UTF-8,
no bytes left over); a body it does not take goes to Python's decoder, which rejects it or stores
it as fastavro reads it (writer.py).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aios.connectors.errors import StoreQueryError
from aios.connectors.history.migrations import DATABASE

# The record type and Kafka coordinates, which the transcoder writes beside each event's own fields.
KAFKA_COLUMNS: tuple[tuple[str, str], ...] = (
    ("_type", "LowCardinality(String)"),  # the short record name: which views take the row
    ("_topic", "LowCardinality(String)"),
    ("_partition", "UInt32"),
    ("_offset", "UInt64"),
)
_RESERVED = {name for name, _ in KAFKA_COLUMNS}
_PRIMITIVES = {"string": "String", "int": "Int32", "long": "Int64", "float": "Float32", "double": "Float64",
               "boolean": "Bool"}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # Avro's name rule; names go into SQL unquoted
_DEFAULTS = {"String": "''", "Bool": "false"}
# events.status: the first of these fields the record has (as HistorySink.to_row picks it).
_STATUS_FIELDS = ("status", "state", "outcome")
# The ingest INSERT's settings, on chdb and on a server alike. The ingest table feeds a view per
# typed table and one into events, and those feed the rollups: running the views side by side
# lets one INSERT use more than one core (60,000 bench events in 10,000-event batches: ~51k rows/s
# against ~34k without, on 2 cores). optimize_on_insert = 0 skips collapsing duplicate event ids
# within the block at insert (~58k rows/s): every exact reader uses FINAL or uniqExact, and
# duplicates from separate batches sit in separate parts anyway.
INGEST_INSERT_SETTINGS: Mapping[str, int] = {
    "output_format_json_quote_64bit_integers": 0,  # payload JSON: epoch ms as numbers, as Python writes them
    "parallel_view_processing": 1,
    "optimize_on_insert": 0,
}


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


def transcoder_op(avro: Any) -> Any:
    """How the transcoder reads a field of Avro type ``avro`` (one ``clickhouse_type`` maps)."""
    if isinstance(avro, str):
        return avro
    if isinstance(avro, list):
        kind = next(t for t in avro if t != "null")
        return ("null_first" if avro[0] == "null" else "null_second", transcoder_op(kind))
    kind = avro["type"]
    if kind == "enum":
        return ("enum", list(avro["symbols"]))
    if kind == "array":
        return ("array", transcoder_op(avro["items"]))
    if kind == "map":
        return ("map", transcoder_op(avro["values"]))
    return transcoder_op(kind)  # a primitive, maybe with a logical type that keeps its encoding


@dataclass(frozen=True)
class RecordSpec:
    """One record type the sink may hand to ClickHouse: its current schema and where it is stored."""

    raw: Mapping[str, Any]  # the .avsc
    fingerprint: bytes
    event_type: str  # short name, e.g. Task
    typed: str | None  # its typed table, or None for record types stored in ``events`` only
    typed_columns: Mapping[str, str]  # the typed table's input columns and types (``timestamp`` included)


@dataclass(frozen=True)
class IngestTable:
    """Where one record type's events go: the shared table it feeds and how its fields fill it."""

    record: str  # full record name, e.g. aios.v1.Task
    event_type: str
    fingerprint: bytes  # the current schema's; other writer versions take the Python path
    table: str  # the ingest table every mapped record type shares
    fields: tuple[tuple[str, str, Any], ...]  # in field order: column, its type in ``table``, transcoder op
    structure: str  # "name Type, …": ``table``'s columns, the union of every record type's


@dataclass(frozen=True)
class IngestPlan:
    tables: dict[str, IngestTable]  # by full record name
    statements: tuple[str, ...]  # create the shared table and its views (idempotent)


def _fields(raw: Mapping[str, Any], event_type: str) -> list[tuple[str, str]] | None:
    """The record's fields as ClickHouse columns, or None when its schema cannot be mapped."""
    if not _NAME.fullmatch(event_type):
        return None
    fields: list[tuple[str, str]] = []
    for field in raw.get("fields", []):
        ch = clickhouse_type(field["type"])
        if ch is None or not _NAME.fullmatch(str(field["name"])):
            return None
        fields.append((str(field["name"]), ch))
    names = {name for name, _ in fields}
    if not {"event_id", "timestamp", "trace_id"} <= names or names & _RESERVED:
        return None
    return fields


def _merge(columns: dict[str, str], fields: list[tuple[str, str]]) -> dict[str, str] | None:
    """``columns`` widened by ``fields`` (Nullable where any record type's field is), or None on a clash."""
    out = dict(columns)
    for name, ch in fields:
        have = out.get(name)
        if have is None:
            out[name] = ch
        elif _strip(have) != _strip(ch):
            return None  # one column cannot hold both; that record type stays on the Python path
        elif ch.startswith("Nullable"):
            out[name] = ch
    return out


def _strip(ch: str) -> str:
    return ch[9:-1] if ch.startswith("Nullable(") else ch


def plan_ingest(specs: Sequence[RecordSpec]) -> IngestPlan:
    """One ingest table for every record type that maps onto it, and the views that fan it out.

    A record type whose schema cannot be mapped, or whose field types clash with another's, is
    left out: the sink decodes it in Python.
    """
    columns: dict[str, str] = dict(KAFKA_COLUMNS)
    members: list[tuple[RecordSpec, list[tuple[str, str]]]] = []
    for spec in specs:
        fields = _fields(spec.raw, spec.event_type)
        merged = _merge(columns, fields) if fields is not None else None
        if fields is None or merged is None:
            continue
        columns = merged
        members.append((spec, fields))
    if not members:
        return IngestPlan({}, ())

    def text(name: str) -> str:  # a string column as events wants it: '' when absent or null
        if name not in columns:
            return "''"
        return f"ifNull({name}, '')" if columns[name].startswith("Nullable") else name

    status = [text(f) for f in _STATUS_FIELDS if f in columns]
    status_sql = f"multiIf({', '.join(f'{s} != {chr(39)}{chr(39)}, {s}' for s in status)}, '')" if status else "''"
    # A typed event is stored once, in its typed table; ``events`` gets the JSON only of types
    # without one (building it was ~1.8 µs a row). Each payload holds its own type's fields, as
    # the Python path writes it; multiIf evaluates a branch only for the rows of its type.
    payloads = "".join(f"_type = '{spec.event_type}', formatRowNoNewline('JSONEachRow', "
                       f"{', '.join(name for name, _ in fields)}), " for spec, fields in members if spec.typed is None)
    payload_sql = f"multiIf({payloads}'')" if payloads else "''"
    events_select = f"""SELECT {text('event_id')} AS event_id, _type AS event_type, _topic AS topic,
        _partition AS partition, _offset AS offset, fromUnixTimestamp64Milli(timestamp, 'UTC') AS ts,
        {text('trace_id')} AS trace_id, {text('task_id')} AS task_id, {text('project_id')} AS project_id,
        {text('role')} AS role, {status_sql} AS status, {payload_sql} AS payload
        FROM {{source}}"""  # noqa: S608 - names checked
    typed_selects: list[tuple[str, str]] = []
    for spec, fields in members:
        if spec.typed is None:
            continue
        own = dict(fields)
        parts = []
        for name, ch in spec.typed_columns.items():
            if name == "timestamp":
                parts.append("fromUnixTimestamp64Milli(timestamp, 'UTC') AS ts")
            elif name == "topic" and name not in own:  # the record's Kafka topic (results.topic)
                parts.append("_topic AS topic")
            elif name in own:
                if columns[name].startswith("Nullable") and not ch.startswith("Nullable"):
                    parts.append(f"ifNull({name}, {_DEFAULTS.get(_strip(columns[name]), '0')}) AS {name}")
                else:
                    parts.append(name)
        typed_selects.append((spec.typed, f"SELECT {', '.join(parts)} FROM {{source}} "  # noqa: S608 - names checked
                                          f"WHERE _type = '{spec.event_type}'"))
    structure = ", ".join(f"{name} {ch}" for name, ch in columns.items())
    digest = hashlib.sha256("\n".join((structure, events_select, *(f"{t}:{s}" for t, s in typed_selects)))
                            .encode()).hexdigest()
    table = f"ingest_{digest[:12]}"
    source = f"{DATABASE}.{table}"
    statements = [f"CREATE TABLE IF NOT EXISTS {source} ({structure}) ENGINE = Null",
                  f"CREATE MATERIALIZED VIEW IF NOT EXISTS {source}_events TO {DATABASE}.events AS "
                  + events_select.format(source=source)]
    statements += [f"CREATE MATERIALIZED VIEW IF NOT EXISTS {source}_{typed} TO {DATABASE}.{typed} AS "
                   + select.format(source=source) for typed, select in typed_selects]
    tables: dict[str, IngestTable] = {}
    for spec, fields in members:
        avro = {str(f["name"]): f["type"] for f in spec.raw["fields"]}
        record = f"{spec.raw.get('namespace', '')}.{spec.raw['name']}".lstrip(".")
        tables[record] = IngestTable(
            record=record, event_type=spec.event_type, fingerprint=spec.fingerprint, table=table,
            fields=tuple((name, columns[name], transcoder_op(avro[name])) for name, _ in fields),
            structure=structure)
    return IngestPlan(tables, tuple(statements))


def ensure_ingest(execute: Callable[[str], Any], query: Callable[[str], list[dict[str, Any]]],
                  schemas: Sequence[tuple[Mapping[str, Any], bytes]],
                  typed_tables: Mapping[str, str]) -> dict[str, IngestTable]:
    """Create the shared ingest table and its views; return the mapped record types by full name.

    ``schemas`` are the current (raw .avsc, fingerprint) pairs; ``typed_tables`` maps a short
    record name to its typed table.
    """
    rows = query(f"SELECT table, name, type FROM system.columns WHERE database = '{DATABASE}' "  # noqa: S608
                 "AND default_kind IN ('', 'EPHEMERAL') ORDER BY table, position")
    columns: dict[str, dict[str, str]] = {}
    for row in rows:
        columns.setdefault(str(row["table"]), {})[str(row["name"])] = str(row["type"])
    specs = []
    for raw, fingerprint in schemas:
        event_type = str(raw["name"]).rsplit(".", 1)[-1]
        typed = typed_tables.get(event_type)
        if typed is not None and typed not in columns:
            raise StoreQueryError(f"typed table {DATABASE}.{typed} is missing: run `aios db migrate`")
        specs.append(RecordSpec(raw, fingerprint, event_type, typed, columns.get(typed or "", {})))
    plan = plan_ingest(specs)
    for statement in plan.statements:
        execute(statement)
    return plan.tables
