"""The Avro → ClickHouse mapping: the shared ingest table, its views, and the transcoder's plans."""

from __future__ import annotations

from typing import Any

import pytest

from aios.connectors.history.ingest import RecordSpec, clickhouse_type, plan_ingest, transcoder_op
from aios.schemas.codec import Codec


@pytest.mark.parametrize(("avro", "expected"), [
    ("string", "String"),
    ("int", "Int32"),
    ({"type": "long", "logicalType": "timestamp-millis"}, "Int64"),
    (["null", "string"], "Nullable(String)"),
    (["null", {"type": "long", "logicalType": "timestamp-millis"}], "Nullable(Int64)"),
    ({"type": "enum", "name": "E", "symbols": ["a"]}, "String"),
    ({"type": "array", "items": "string"}, "Array(String)"),
    ({"type": "map", "values": "string"}, "Map(String, String)"),
    ("bytes", None),  # the JSON payload must carry bytes as base64, as the Python path does
    (["null", {"type": "array", "items": "string"}], None),  # ClickHouse has no Nullable(Array)
    (["null", "string", "int"], None),
    ({"type": "record", "name": "R", "fields": []}, None),
    ({"type": "array", "items": ["null", "string"]}, None),
])
def test_clickhouse_type(avro: Any, expected: str | None) -> None:
    assert clickhouse_type(avro) == expected


BASE = [{"name": "event_id", "type": "string"}, {"name": "timestamp", "type": "long"},
        {"name": "trace_id", "type": "string"}]


def spec(name: str, fields: list[dict[str, Any]], typed: str | None = None,
         typed_columns: dict[str, str] | None = None) -> RecordSpec:
    return RecordSpec({"type": "record", "name": name, "fields": fields}, name.encode().ljust(8, b"_"), name,
                      typed, typed_columns or {})


def test_plan_skips_schemas_it_cannot_map() -> None:
    plan = plan_ingest([
        spec("X", BASE),
        spec("WithBytes", [*BASE, {"name": "b", "type": "bytes"}]),
        spec("Clash", [*BASE, {"name": "_topic", "type": "string"}]),
        spec("NoEnvelope", BASE[:1]),
    ])
    assert set(plan.tables) == {"X"}
    assert [name for name, _, _ in plan.tables["X"].fields] == ["event_id", "timestamp", "trace_id"]
    assert plan.tables["X"].structure.startswith(
        "_type LowCardinality(String), _topic LowCardinality(String), _partition UInt32, _offset UInt64")
    assert plan_ingest([spec("NoEnvelope", BASE[:1])]).statements == ()


def test_record_types_share_one_table_widened_to_nullable_and_clashing_types_stay_out() -> None:
    plan = plan_ingest([
        spec("A", [*BASE, {"name": "note", "type": "string"}, {"name": "n", "type": "int"}]),
        spec("B", [*BASE, {"name": "note", "type": ["null", "string"]}]),
        spec("C", [*BASE, {"name": "n", "type": "string"}]),  # n is Int32 for A: one column cannot hold both
    ])
    assert set(plan.tables) == {"A", "B"}
    a, b = plan.tables["A"], plan.tables["B"]
    assert a.table == b.table and a.structure == b.structure
    assert "note Nullable(String)" in a.structure and "n Int32" in a.structure
    # each field fills its column with the table's type: B's plain note goes into A's Nullable one
    assert a.fields[-2:] == (("note", "Nullable(String)", "string"), ("n", "Int32", "int"))
    assert b.fields[-1] == ("note", "Nullable(String)", ("null_first", "string"))
    assert "CONSTRAINT" not in plan.statements[0], "the transcoder checks every body; ClickHouse need not"
    events_view = plan.statements[1]
    # each type's payload has its own fields only, as the Python path writes it
    assert "_type = 'A', formatRowNoNewline('JSONEachRow', event_id, timestamp, trace_id, note, n)" in events_view
    assert "_type = 'B', formatRowNoNewline('JSONEachRow', event_id, timestamp, trace_id, note)" in events_view


def test_a_typed_event_gets_no_json_payload_in_events() -> None:
    typed = {"event_id": "String", "timestamp": "Int64", "trace_id": "String", "note": "String"}
    plan = plan_ingest([spec("A", [*BASE, {"name": "note", "type": "string"}], typed="a", typed_columns=typed),
                        spec("B", [*BASE, {"name": "note", "type": "string"}])])
    events_view = plan.statements[1]
    assert "_type = 'A', formatRowNoNewline" not in events_view
    assert "_type = 'B', formatRowNoNewline" in events_view
    only_typed = plan_ingest([spec("A", BASE, typed="a", typed_columns=typed)]).statements[1]
    assert "formatRowNoNewline" not in only_typed and "'' AS payload" in only_typed


def test_plan_names_follow_the_ddl_and_typed_views_fill_ts_and_nulls() -> None:
    codec = Codec()
    schema = codec.catalog.get("TaskResult")
    typed = {"event_id": "String", "timestamp": "Int64", "trace_id": "String", "error": "String",
             "ttft_ms": "Nullable(Float64)"}
    result = RecordSpec(schema.raw, schema.fingerprint, "TaskResult", "results", typed)
    a = plan_ingest([result])
    b = plan_ingest([RecordSpec(schema.raw, schema.fingerprint, "TaskResult", "results", {**typed, "status": "String"})])
    assert a.tables["aios.v1.TaskResult"].table != b.tables["aios.v1.TaskResult"].table, \
        "a different typed table gets new objects, never altered ones"
    view = a.statements[2]
    assert view.startswith(f"CREATE MATERIALIZED VIEW IF NOT EXISTS aios.{a.tables['aios.v1.TaskResult'].table}_results")
    assert "fromUnixTimestamp64Milli(timestamp, 'UTC') AS ts" in view
    assert "ifNull(error, '') AS error" in view
    assert view.endswith("WHERE _type = 'TaskResult'")


@pytest.mark.parametrize(("avro", "op"), [
    ("string", "string"),
    ({"type": "long", "logicalType": "timestamp-millis"}, "long"),
    (["null", "string"], ("null_first", "string")),
    (["double", "null"], ("null_second", "double")),
    ({"type": "enum", "name": "E", "symbols": ["a", "b"]}, ("enum", ["a", "b"])),
    ({"type": "array", "items": "string"}, ("array", "string")),
    ({"type": "map", "values": {"type": "enum", "name": "F", "symbols": ["x"]}}, ("map", ("enum", ["x"]))),
])
def test_transcoder_op(avro: Any, op: Any) -> None:
    assert transcoder_op(avro) == op


def test_every_mapped_record_type_gets_a_plan_for_each_field() -> None:
    catalog = Codec().catalog
    specs = [RecordSpec(s.raw, s.fingerprint, s.short_name, None, {}) for s in catalog.current.values()]
    plan = plan_ingest(specs)
    for name, table in plan.tables.items():
        assert [f for f, _, _ in table.fields] == [f["name"] for f in catalog.get(name).raw["fields"]]
