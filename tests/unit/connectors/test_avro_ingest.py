"""The Avro → ClickHouse mapping and the object container the history sink hands to ClickHouse."""

from __future__ import annotations

import io
from typing import Any

import fastavro
import pytest

from connectors.history.avro_ingest import ContainerBuilder, _varint, clickhouse_type, plan_ingest
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


def test_plan_skips_schemas_it_cannot_map() -> None:
    base = [{"name": "event_id", "type": "string"}, {"name": "timestamp", "type": "long"},
            {"name": "trace_id", "type": "string"}]
    ok = plan_ingest({"type": "record", "name": "X", "fields": base}, b"f" * 8, "X", None, {})
    assert ok is not None and ok.columns[:3] == ("_topic", "_partition", "_offset")
    with_bytes = {"type": "record", "name": "X", "fields": [*base, {"name": "b", "type": "bytes"}]}
    assert plan_ingest(with_bytes, b"f" * 8, "X", None, {}) is None
    clash = {"type": "record", "name": "X", "fields": [*base, {"name": "_topic", "type": "string"}]}
    assert plan_ingest(clash, b"f" * 8, "X", None, {}) is None
    no_envelope = {"type": "record", "name": "X", "fields": base[:1]}
    assert plan_ingest(no_envelope, b"f" * 8, "X", None, {}) is None


def test_plan_names_follow_the_ddl_and_typed_view_fills_ts_and_nulls() -> None:
    codec = Codec()
    schema = codec.catalog.get("TaskResult")
    typed = {"event_id": "String", "timestamp": "Int64", "trace_id": "String", "error": "String",
             "ttft_ms": "Nullable(Float64)"}
    a = plan_ingest(schema.raw, schema.fingerprint, "TaskResult", "results", typed)
    b = plan_ingest(schema.raw, schema.fingerprint, "TaskResult", "results", {**typed, "status": "String"})
    assert a is not None and b is not None
    assert a.table != b.table, "a different typed table gets new objects, never altered ones"
    view = a.statements[2]
    assert "fromUnixTimestamp64Milli(timestamp, 'UTC') AS ts" in view
    assert "ifNull(error, '') AS error" in view


def test_varint_is_avro_zigzag() -> None:
    assert _varint(0) == b"\x00" and _varint(1) == b"\x02" and _varint(64) == b"\x80\x01"
    buf = io.BytesIO(_varint(2**40 + 3))
    assert fastavro.schemaless_reader(buf, "long") == 2**40 + 3  # type: ignore[arg-type]


def test_container_is_a_valid_avro_file_with_the_kafka_coordinates() -> None:
    codec = Codec()
    schema = codec.catalog.get("Task")
    plan = plan_ingest(schema.raw, schema.fingerprint, "Task", None, {})
    assert plan is not None
    builder = ContainerBuilder(plan)
    events = [value for name, value in task_events(0) + task_events(1) if name == "Task"]
    for i, value in enumerate(events):
        _, body, _ = codec.frame(codec.encode("Task", value))
        builder.add("aios.tasks", i, 10**9 + i, body)
    records = list(fastavro.reader(io.BytesIO(builder.build())))
    assert [(r["_topic"], r["_partition"], r["_offset"]) for r in records] == [
        ("aios.tasks", 0, 10**9), ("aios.tasks", 1, 10**9 + 1)]
    assert [r["event_id"] for r in records] == [e["event_id"] for e in events]
    assert records[0]["description"] == events[0]["description"]
