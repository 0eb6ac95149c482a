"""The Avro → ClickHouse mapping and the object container the history sink hands to ClickHouse."""

from __future__ import annotations

import io
from typing import Any

import fastavro
import pytest

from connectors.history.avro_ingest import (
    FRAME_END,
    ContainerBuilder,
    RecordSpec,
    _varint,
    clickhouse_type,
    plan_ingest,
)
from schemas.codec import Codec
from streams.bench_sink import task_events


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
    assert plan.tables["X"].columns[:4] == ("_type", "_topic", "_partition", "_offset")
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
    assert a.columns[-3:] == ("note", "n", "_end") and b.columns[-2:] == ("note", "_end")
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


def test_varint_is_avro_zigzag() -> None:
    assert _varint(0) == b"\x00" and _varint(1) == b"\x02" and _varint(64) == b"\x80\x01"
    buf = io.BytesIO(_varint(2**40 + 3))
    assert fastavro.schemaless_reader(buf, "long") == 2**40 + 3  # type: ignore[arg-type]


def test_container_is_a_valid_avro_file_with_the_kafka_coordinates() -> None:
    codec = Codec()
    schema = codec.catalog.get("Task")
    plan = plan_ingest([RecordSpec(schema.raw, schema.fingerprint, "Task", None, {})]).tables["aios.v1.Task"]
    builder = ContainerBuilder(plan)
    events = [value for name, value in task_events(0) + task_events(1) if name == "Task"]
    for i, value in enumerate(events):
        _, body, _ = codec.frame(codec.encode("Task", value))
        builder.add("aios.tasks", i, 10**9 + i, body)
    records = list(fastavro.reader(io.BytesIO(builder.build())))
    assert [(r["_type"], r["_topic"], r["_partition"], r["_offset"]) for r in records] == [
        ("Task", "aios.tasks", 0, 10**9), ("Task", "aios.tasks", 1, 10**9 + 1)]
    assert [r["event_id"] for r in records] == [e["event_id"] for e in events]
    assert records[0]["description"] == events[0]["description"]
    assert all(r["_end"] == FRAME_END for r in records)  # the frame mark behind each body


def test_the_ingest_table_checks_the_frame_mark_and_every_string_for_utf8() -> None:
    plan = plan_ingest([spec("A", [*BASE, {"name": "note", "type": ["null", "string"]},
                                   {"name": "tags", "type": {"type": "array", "items": "string"}},
                                   {"name": "meta", "type": {"type": "map", "values": "string"}},
                                   {"name": "counts", "type": {"type": "map", "values": "int"}},
                                   {"name": "n", "type": "int"}])])
    create = plan.statements[0]
    assert f"CONSTRAINT framed CHECK _end = unhex('{FRAME_END.hex()}')" in create
    utf8 = create.split("CONSTRAINT utf8 CHECK ", 1)[1]
    for check in ("isValidUTF8(event_id)", "isValidUTF8(trace_id)", "isValidUTF8(ifNull(note, ''))",
                  "arrayAll(s -> isValidUTF8(s), tags)", "arrayAll(s -> isValidUTF8(s), mapKeys(meta))",
                  "arrayAll(s -> isValidUTF8(s), mapValues(meta))", "arrayAll(s -> isValidUTF8(s), mapKeys(counts))"):
        assert check in utf8
    assert "mapValues(counts)" not in utf8 and "(n)" not in utf8 and "_topic" not in utf8  # not strings, or ours
    reserved = plan_ingest([spec("B", [*BASE, {"name": "_end", "type": "string"}])])
    assert reserved.tables == {}, "a schema with a field named like the frame mark stays on the Python path"
