"""Native Avro ingest: ClickHouse decodes the events, Python only moves bytes.

Decoding Avro into Python dicts costs 20-50 µs per event, which caps one core far below the sink's
target. ClickHouse reads Avro natively, so the sink frames each event's Avro body into an Avro
object container of its record type and inserts the batch's containers into one *ingest table*:

- the ingest table (``ENGINE = Null``, so it stores nothing) has one column per field of every
  mapped record type's current schema (Nullable where any type's field is), plus ``_type`` (the
  short record name) and ``_topic``, ``_partition``, ``_offset``; a container fills its own
  type's columns and the rest take their defaults;
- one materialised view per typed table copies its type's rows there (``tasks``, ``results``, …),
  whose own rollup views then fire as before;
- another builds every ``events`` row, with the event as JSON (its own type's fields) in ``payload``
  when its type has no typed table.

One table for all types lets chdb store a whole batch with one INSERT: ClickHouse pays 15-25 ms
per INSERT (a pipeline per view, a part per target table) whatever its size, which per record
type was most of a 10,000-event batch's time.

The objects are derived from the ``.avsc`` files and the typed tables, hold no data, and are named
after a hash of their own DDL: a schema change creates new ones beside the old rather than
altering anything a running sink may be inserting into. A record type whose schema uses Avro
types this mapping does not cover (bytes, nested records, general unions), or whose field types
clash with another type's, is left out; the sink decodes those in Python as before.

A container holds its events in one block, each event followed by a 4-byte frame mark
(``_end``): ClickHouse reads a body that is truncated or runs long as the next event's start, so
the mark lands on other bytes and the ingest table's ``framed`` constraint fails the INSERT rather
than storing misread rows. A ``utf8`` constraint checks every string column, as fastavro checks on
the Python path. When ClickHouse refuses a batch, the sink sorts it out in Python (writer.py).
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

# The record type and Kafka coordinates ride in front of the event's own fields, and the frame mark behind them; a
# record encodes as its fields in order, so prefixing and suffixing their encodings to the body is a valid encoding of
# the wider record.
KAFKA_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("_type", "string", "LowCardinality(String)"),  # the short record name: which views take the row
    ("_topic", "string", "LowCardinality(String)"),
    ("_partition", "int", "UInt32"),
    ("_offset", "long", "UInt64"),
)
FRAME_END = bytes.fromhex("9e3779b9")  # any 4 bytes: a misread lands on them by chance 1 in 2**32
_FRAME_FIELD = "_end"  # behind the event's own fields, read as a column the ingest table's constraint checks
_FRAME_AVRO = {"type": "fixed", "name": "AiosFrameEnd", "size": len(FRAME_END)}
_FRAME_COLUMN = f"FixedString({len(FRAME_END)})"
_RESERVED = {*(f for f, _, _ in KAFKA_FIELDS), _FRAME_FIELD}
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
    "input_format_avro_allow_missing_fields": 1,  # each record type's container lacks the others' columns
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
    """Where one record type's Avro goes: its container's shape and the shared table it feeds."""

    record: str  # full record name, e.g. aios.v1.Task
    event_type: str
    fingerprint: bytes  # the current schema's; other writer versions take the Python path
    table: str  # the ingest table every mapped record type shares
    columns: tuple[str, ...]  # this record type's container fields, as columns of ``table``
    structure: str  # "name Type, …": ``table``'s columns, the union of every record type's
    container_schema: bytes  # the Avro schema (JSON) of the container's records


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
    columns: dict[str, str] = {f: c for f, _, c in KAFKA_FIELDS}
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
            elif name in own:
                if columns[name].startswith("Nullable") and not ch.startswith("Nullable"):
                    parts.append(f"ifNull({name}, {_DEFAULTS.get(_strip(columns[name]), '0')}) AS {name}")
                else:
                    parts.append(name)
        typed_selects.append((spec.typed, f"SELECT {', '.join(parts)} FROM {{source}} "  # noqa: S608 - names checked
                                          f"WHERE _type = '{spec.event_type}'"))
    columns[_FRAME_FIELD] = _FRAME_COLUMN
    structure = ", ".join(f"{name} {ch}" for name, ch in columns.items())
    digest = hashlib.sha256("\n".join((structure, FRAME_END.hex(), events_select, *(f"{t}:{s}" for t, s in typed_selects)))
                            .encode()).hexdigest()
    table = f"ingest_{digest[:12]}"
    source = f"{DATABASE}.{table}"
    checks = [f"CONSTRAINT framed CHECK _end = unhex('{FRAME_END.hex()}')"]
    utf8 = [check for name, ch in columns.items() if name not in _RESERVED and (check := _utf8_check(name, ch))]
    if utf8:
        checks.append(f"CONSTRAINT utf8 CHECK {' AND '.join(utf8)}")
    statements = [f"CREATE TABLE IF NOT EXISTS {source} ({structure}, {', '.join(checks)}) ENGINE = Null",
                  f"CREATE MATERIALIZED VIEW IF NOT EXISTS {source}_events TO {DATABASE}.events AS "
                  + events_select.format(source=source)]
    statements += [f"CREATE MATERIALIZED VIEW IF NOT EXISTS {source}_{typed} TO {DATABASE}.{typed} AS "
                   + select.format(source=source) for typed, select in typed_selects]
    tables: dict[str, IngestTable] = {}
    for spec, fields in members:
        container = dict(spec.raw)
        container["fields"] = ([{"name": f, "type": t} for f, t, _ in KAFKA_FIELDS] + list(spec.raw["fields"])
                               + [{"name": _FRAME_FIELD, "type": _FRAME_AVRO}])
        record = f"{spec.raw.get('namespace', '')}.{spec.raw['name']}".lstrip(".")
        tables[record] = IngestTable(
            record=record, event_type=spec.event_type, fingerprint=spec.fingerprint, table=table,
            columns=(*[f for f, _, _ in KAFKA_FIELDS], *(name for name, _ in fields), _FRAME_FIELD),
            structure=structure,
            container_schema=orjson.dumps(container))
    return IngestPlan(tables, tuple(statements))


def _utf8_check(name: str, ch: str) -> str | None:
    """A check that column ``name`` of type ``ch`` holds valid UTF-8 only, or None for non-string types."""
    inner = _strip(ch)
    if inner == "String":
        return f"isValidUTF8({name})" if inner == ch else f"isValidUTF8(ifNull({name}, ''))"
    if inner == "Array(String)":
        return f"arrayAll(s -> isValidUTF8(s), {name})"
    if inner.startswith("Map(String,"):
        keys = f"arrayAll(s -> isValidUTF8(s), mapKeys({name}))"
        return f"{keys} AND arrayAll(s -> isValidUTF8(s), mapValues({name}))" if inner == "Map(String, String)" else keys
    return None


def _unsigned_varint(z: int) -> bytes:
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


# Every event needs a varint for its Kafka offset, mostly in the millions, so varints come from two
# tables instead of a loop per event: the whole encoding of numbers below 2**14, and for larger
# ones the two 7-bit groups of each 14 low bits (continuation bits set) in front of the rest.
_WHOLE = tuple(_unsigned_varint(z) for z in range(1 << 14))
_GROUPS = tuple(bytes(((z & 0x7F) | 0x80, (z >> 7) | 0x80)) for z in range(1 << 14))


def _varint(n: int) -> bytes:
    """Avro's zig-zag varint of a non-negative ``n``."""
    z = n << 1  # zig-zag of a non-negative number
    if z < 1 << 14:
        return _WHOLE[z]
    out = _GROUPS[z & 0x3FFF]
    z >>= 14
    while z >= 1 << 14:
        out += _GROUPS[z & 0x3FFF]
        z >>= 14
    return out + _WHOLE[z]


class ContainerBuilder:
    """An Avro object container of one ingest table's records, in one block."""

    def __init__(self, ingest: IngestTable) -> None:
        self.ingest = ingest
        self._type = _avro_string(ingest.event_type.encode())
        self._heads: dict[str, dict[int, bytes]] = {}  # type, topic and partition, encoded once
        self._parts: list[bytes] = []

    def add(self, topic: str, partition: int, offset: int, body: bytes) -> None:
        heads = self._heads.get(topic)
        if heads is None:
            heads = self._heads[topic] = {}
        prefix = heads.get(partition)
        if prefix is None:
            prefix = heads[partition] = self._type + _avro_string(topic.encode()) + _varint(partition)
        # the record: type and Kafka coordinates, the event's body, the frame mark
        self._parts += (prefix, _varint(offset), body, FRAME_END)

    @property
    def count(self) -> int:
        return len(self._parts) // 4

    def build(self) -> bytes:
        meta = (b"\x04" + _avro_string(b"avro.schema") + _avro_string(self.ingest.container_schema)
                + _avro_string(b"avro.codec") + _avro_string(b"null") + b"\x00")
        sync = os.urandom(16)
        data = b"".join(self._parts)
        return b"".join((b"Obj\x01", meta, sync, _varint(self.count), _varint(len(data)), data, sync))


def _avro_string(raw: bytes) -> bytes:
    return _varint(len(raw)) + raw


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
