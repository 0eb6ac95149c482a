"""The codec: single-object and Confluent framing, garbage handling, schema evolution, round trips."""

from __future__ import annotations

import io
import json
import random
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastavro
import pytest
from fastavro.read import SchemaResolutionError
from fastavro.schema import fingerprint, to_parsing_canonical_form
from hypothesis import given, settings
from hypothesis import strategies as st

from aios.schemas.codec import (
    CONFLUENT_MAGIC,
    SINGLE_OBJECT_MAGIC,
    Codec,
    ConfluentRegistry,
    SchemaCatalog,
    WireFormat,
    crc64_avro,
    load_catalog,
    parse_record_schema,
)
from aios.schemas.errors import AiosError, EncodeError, SchemaError, UndecodableError
from aios.schemas.events import envelope, to_ms
from tests.unit.schemas import RECORD_NAMES, load_raw, sample_value, write_avsc

TOPIC = "aios.tasks"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
OLD_TASK_DROPPED = ("privacy", "submitted_by", "metadata")


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec()


@pytest.fixture
def registry() -> ConfluentRegistry:
    # Each mock client has its own in-memory store, so tests do not share subjects or ids.
    return ConfluentRegistry("mock://aios-test")


def old_task_raw() -> dict[str, Any]:
    """Task as it was before privacy, submitted_by and metadata were added."""
    raw = load_raw("Task")
    raw["fields"] = [f for f in raw["fields"] if f["name"] not in OLD_TASK_DROPPED]
    return raw


def old_task_value() -> dict[str, Any]:
    value = sample_value("Task")
    for name in OLD_TASK_DROPPED:
        del value[name]
    return value


def exact_ms(value: datetime) -> int:
    """Milliseconds since the epoch without going through float seconds."""
    return (value - EPOCH) // timedelta(milliseconds=1)


def catalog_with_current(raw: dict[str, Any]) -> SchemaCatalog:
    catalog = SchemaCatalog()
    catalog.add(parse_record_schema(raw))
    return catalog


# --- CRC-64-AVRO -----------------------------------------------------------------------------


def test_crc64_matches_avro_spec_test_vectors() -> None:
    # From the Avro project's share/test/data/schema-tests.txt (64-bit Rabin fingerprints).
    assert crc64_avro(b'"null"') == 7195948357588979594
    assert crc64_avro(b'"int"') == 8247732601305521295
    assert crc64_avro(b"") == 0xC15D213AA4D7A795  # the empty fingerprint


_FINGERPRINTED: list[Any] = ["int", "string", {"type": "array", "items": "long"}, *RECORD_NAMES]


@pytest.mark.parametrize("schema", _FINGERPRINTED)
def test_crc64_matches_fastavro(schema: Any) -> None:
    if isinstance(schema, str) and schema in RECORD_NAMES:
        schema = load_raw(schema)
    canonical = to_parsing_canonical_form(schema)
    # fastavro renders the fingerprint as the hex of its little-endian bytes.
    assert struct.pack("<Q", crc64_avro(canonical.encode())).hex() == fingerprint(canonical, "CRC-64-AVRO")


# --- single-object encoding ------------------------------------------------------------------


@pytest.mark.parametrize("name", RECORD_NAMES)
def test_single_object_round_trip(codec: Codec, name: str) -> None:
    value = sample_value(name)
    data = codec.encode(name, value)

    canonical = to_parsing_canonical_form(load_raw(name))
    assert data[:2] == b"\xc3\x01" == SINGLE_OBJECT_MAGIC
    assert data[2:10] == struct.pack("<Q", crc64_avro(canonical.encode()))
    assert data[2:10] == bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
    # The payload after the header is plain Avro binary of the record.
    assert fastavro.schemaless_reader(io.BytesIO(data[10:]), load_raw(name)) == value

    decoded = codec.decode(data, expect=name)
    assert decoded.name == f"aios.v1.{name}"
    assert decoded.format is WireFormat.SINGLE_OBJECT
    assert decoded.value == value
    assert codec.decode(data, expect=f"aios.v1.{name}").value == value


def test_defaults_are_filled_on_encode(codec: Codec) -> None:
    value = {**envelope(), "task_id": "t1", "project_id": "p1", "role": "coder", "description": "d"}
    decoded = codec.decode(codec.encode("Task", value)).value
    assert decoded["priority"] == 0
    assert decoded["depends_on"] == []
    assert decoded["privacy"] == "normal"
    assert decoded["submitted_by"] == "unknown"
    assert decoded["metadata"] == {}
    assert exact_ms(decoded["timestamp"]) == value["timestamp"]


def test_write_format_follows_registry(codec: Codec, registry: ConfluentRegistry) -> None:
    assert codec.write_format is WireFormat.SINGLE_OBJECT
    assert Codec(registry=registry).write_format is WireFormat.CONFLUENT


# --- Confluent wire format through the confluent-kafka mock registry --------------------------


@pytest.mark.parametrize("name", RECORD_NAMES)
def test_confluent_round_trip(registry: ConfluentRegistry, name: str) -> None:
    topic = f"aios.test.{name.lower()}"
    writer = Codec(registry=registry)
    value = sample_value(name)
    data = writer.encode(name, value, topic=topic)

    assert data[0] == CONFLUENT_MAGIC == 0
    (schema_id,) = struct.unpack(">I", data[1:5])
    latest = registry._client.get_latest_version(f"{topic}-value")  # TopicNameStrategy
    assert latest.schema_id == schema_id
    assert latest.subject == f"{topic}-value"
    assert json.loads(str(latest.schema.schema_str)) == load_raw(name)
    assert f"{topic}-value" in registry._client.get_subjects()
    assert fastavro.schemaless_reader(io.BytesIO(data[5:]), load_raw(name)) == value

    # A fresh reader (empty id cache) resolves the writer schema from the registry.
    decoded = Codec(registry=registry).decode(data, expect=name)
    assert decoded.format is WireFormat.CONFLUENT
    assert decoded.name == f"aios.v1.{name}"
    assert decoded.value == value
    # The writer decodes its own bytes from its cache.
    assert writer.decode(data).value == value


def test_confluent_schema_id_is_reused_per_subject(registry: ConfluentRegistry) -> None:
    writer = Codec(registry=registry)
    first = writer.encode("Task", sample_value("Task"), topic=TOPIC)
    second = Codec(registry=registry).encode("Task", sample_value("Task"), topic=TOPIC)
    assert first[:5] == second[:5]
    assert registry._client.get_versions(f"{TOPIC}-value") == [1]


def test_confluent_encode_without_topic_raises(registry: ConfluentRegistry) -> None:
    with pytest.raises(EncodeError, match="topic"):
        Codec(registry=registry).encode("Task", sample_value("Task"))


def test_confluent_bytes_without_registry_name_the_setting(registry: ConfluentRegistry) -> None:
    data = Codec(registry=registry).encode("Task", sample_value("Task"), topic=TOPIC)
    with pytest.raises(UndecodableError, match="AIOS_SCHEMA_REGISTRY_URL"):
        Codec().decode(data)


def test_confluent_unknown_schema_id_is_undecodable(registry: ConfluentRegistry) -> None:
    data = Codec(registry=registry).encode("Task", sample_value("Task"), topic=TOPIC)
    forged = struct.pack(">bI", 0, 4242) + data[5:]
    with pytest.raises(UndecodableError, match="4242"):
        Codec(registry=registry).decode(forged)


def test_registry_reader_detects_both_formats(registry: ConfluentRegistry) -> None:
    value = sample_value("TaskResult")
    single = Codec().encode("TaskResult", value)
    confluent = Codec(registry=registry).encode("TaskResult", value, topic="aios.results")
    reader = Codec(registry=registry)

    from_single = reader.decode(single, expect="TaskResult")
    from_confluent = reader.decode(confluent, expect="TaskResult")
    assert from_single.format is WireFormat.SINGLE_OBJECT
    assert from_confluent.format is WireFormat.CONFLUENT
    assert from_single.value == from_confluent.value == value


# --- garbage -----------------------------------------------------------------------------------


def _garbage() -> list[tuple[str, bytes | None]]:
    rng = random.Random(20240501)
    good = Codec().encode("Task", sample_value("Task"))
    cases: list[tuple[str, bytes | None]] = [
        ("none", None),
        ("empty", b""),
        ("one byte", b"\xc3"),
        ("four bytes", b"\x00\x00\x00\x01"),
        ("short single-object header", b"\xc3\x01\x01\x02\x03\x04\x05"),
        ("unknown fingerprint", SINGLE_OBJECT_MAGIC + b"\x01\x02\x03\x04\x05\x06\x07\x08" + good[10:]),
        ("header only", good[:10]),
        ("json", b'{"task_id": "t1"}'),
    ]
    for i in range(20):
        size = rng.randint(5, 200)
        first = rng.choice([b for b in range(256) if b not in (0x00, 0xC3)])
        cases.append((f"random {i}", bytes([first]) + rng.randbytes(size - 1)))
    return cases


@pytest.mark.parametrize(("label", "data"), _garbage(), ids=[c[0] for c in _garbage()])
def test_garbage_is_undecodable(codec: Codec, label: str, data: bytes | None) -> None:
    with pytest.raises(UndecodableError) as info:
        codec.decode(data)
    assert isinstance(info.value, SchemaError)
    assert isinstance(info.value, AiosError)


@pytest.mark.parametrize("name", RECORD_NAMES)
def test_every_truncation_is_undecodable(codec: Codec, name: str) -> None:
    data = codec.encode(name, sample_value(name))
    for end in range(10, len(data)):
        with pytest.raises(UndecodableError):
            codec.decode(data[:end])


def test_truncated_confluent_payload_is_undecodable(registry: ConfluentRegistry) -> None:
    data = Codec(registry=registry).encode("Task", sample_value("Task"), topic=TOPIC)
    reader = Codec(registry=registry)
    for end in range(5, len(data)):
        with pytest.raises(UndecodableError):
            reader.decode(data[:end])


def test_expect_rejects_other_record_types(codec: Codec, registry: ConfluentRegistry) -> None:
    result = sample_value("TaskResult")
    with pytest.raises(UndecodableError, match="expected a Task event, got TaskResult"):
        codec.decode(codec.encode("TaskResult", result), expect="Task")
    confluent = Codec(registry=registry).encode("TaskResult", result, topic="aios.results")
    with pytest.raises(UndecodableError, match="expected a Task event"):
        Codec(registry=registry).decode(confluent, expect="Task")


# --- schema evolution --------------------------------------------------------------------------


def test_old_single_object_data_reads_with_new_defaults(tmp_path: Path) -> None:
    old = old_task_raw()
    write_avsc(tmp_path, old, "Task.v0.avsc")
    data = Codec(catalog_with_current(old)).encode("Task", old_task_value())
    assert data[2:10] == parse_record_schema(old).fingerprint
    assert data[2:10] != load_catalog().get("Task").fingerprint

    # Without the retired version the fingerprint is unknown ...
    with pytest.raises(UndecodableError, match="fingerprint"):
        Codec().decode(data)

    # ... with it, the current reader schema fills the new fields with their defaults.
    decoded = Codec(load_catalog(extra_writer_dirs=[tmp_path])).decode(data, expect="Task")
    assert decoded.format is WireFormat.SINGLE_OBJECT
    assert decoded.value == {**old_task_value(), "privacy": "normal", "submitted_by": "unknown", "metadata": {}}


def test_extra_writer_dirs_do_not_replace_current_schemas(tmp_path: Path) -> None:
    write_avsc(tmp_path, old_task_raw(), "Task.v0.avsc")
    catalog = load_catalog(extra_writer_dirs=[tmp_path])
    assert catalog.get("Task").fingerprint == load_catalog().get("Task").fingerprint
    assert len(catalog.by_fingerprint) == len(RECORD_NAMES) + 1


def test_old_confluent_data_reads_with_new_defaults(registry: ConfluentRegistry) -> None:
    old_writer = Codec(catalog_with_current(old_task_raw()), registry=registry)
    old_data = old_writer.encode("Task", old_task_value(), topic=TOPIC)
    new_data = Codec(registry=registry).encode("Task", sample_value("Task"), topic=TOPIC)
    assert old_data[1:5] != new_data[1:5]
    assert sorted(registry._client.get_versions(f"{TOPIC}-value")) == [1, 2]

    reader = Codec(registry=registry)
    decoded = reader.decode(old_data, expect="Task")
    assert decoded.format is WireFormat.CONFLUENT
    assert decoded.value == {**old_task_value(), "privacy": "normal", "submitted_by": "unknown", "metadata": {}}
    assert reader.decode(new_data).value == sample_value("Task")


def _strip(avro_type: Any) -> Any:
    """A field type without documentation, for comparing two schema versions."""
    if isinstance(avro_type, dict):
        return {k: _strip(v) for k, v in avro_type.items() if k not in ("doc", "default")}
    if isinstance(avro_type, list):
        return [_strip(t) for t in avro_type]
    return avro_type


_PROMOTIONS = {("int", "long"), ("int", "float"), ("int", "double"), ("long", "float"), ("long", "double"),
               ("float", "double"), ("string", "bytes"), ("bytes", "string")}


def _type_readable(writer: Any, reader: Any) -> bool:
    writer, reader = _strip(writer), _strip(reader)
    if writer == reader or (writer, reader) in _PROMOTIONS:
        return True
    if isinstance(reader, list):  # a reader union accepts any writer branch it contains
        branches = writer if isinstance(writer, list) else [writer]
        return all(any(_type_readable(b, r) for r in reader) for b in branches)
    return False


def is_backward_compatible(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Can a reader with schema ``new`` read data written with ``old``? (records, flat check)"""
    if old["name"] != new["name"]:
        return False
    old_fields = {f["name"]: f for f in old["fields"]}
    for field in new["fields"]:
        if field["name"] in old_fields:
            if not _type_readable(old_fields[field["name"]]["type"], field["type"]):
                return False
        elif "default" not in field:
            return False
    return True


def _fastavro_resolves(old: dict[str, Any], new: dict[str, Any], value: dict[str, Any]) -> bool:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(old), value)
    buf.seek(0)
    try:
        fastavro.schemaless_reader(buf, fastavro.parse_schema(old), fastavro.parse_schema(new))
    except SchemaResolutionError:
        return False
    return True


@pytest.mark.parametrize("name", RECORD_NAMES)
def test_current_schemas_are_backward_compatible_with_themselves(name: str) -> None:
    raw = load_raw(name)
    assert is_backward_compatible(raw, raw)
    assert _fastavro_resolves(raw, raw, sample_value(name))


def compatibility_cases() -> list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any], bool]]:
    """(what changes, writer schema, reader schema, a value of the writer, BACKWARD compatible?)."""
    current, old = load_raw("Task"), old_task_raw()
    required = load_raw("Task")
    required["fields"] = [*required["fields"], {"name": "owner", "type": "string"}]
    retyped = load_raw("Task")
    retyped["fields"] = [{**f, "type": "int"} if f["name"] == "role" else f for f in retyped["fields"]]
    widened = old_task_raw()
    widened["fields"] = [{**f, "type": "long"} if f["name"] == "priority" else f for f in widened["fields"]]
    return [
        ("fields added with defaults", old, current, old_task_value(), True),
        ("fields removed", current, old, sample_value("Task"), True),
        ("a field added without a default", current, required, sample_value("Task"), False),
        ("string to int", current, retyped, sample_value("Task"), False),
        ("int to long", old, widened, old_task_value(), True),
    ]


def test_compatibility_rule_agrees_with_fastavro() -> None:
    for _, writer, reader, value, expected in compatibility_cases():
        assert is_backward_compatible(writer, reader) is expected
        assert _fastavro_resolves(writer, reader, value) is expected


# --- property test -----------------------------------------------------------------------------

_text = st.text(max_size=40)
_tasks = st.fixed_dictionaries(
    {
        "event_id": _text,
        "timestamp": st.integers(min_value=0, max_value=253402300799999),  # up to 9999-12-31
        "trace_id": _text,
        "task_id": _text,
        "project_id": _text,
        "role": _text,
        "description": st.text(max_size=400),
    },
    optional={
        "priority": st.integers(min_value=-(2**31), max_value=2**31 - 1),
        "depends_on": st.lists(_text, max_size=8),
        "privacy": st.sampled_from(["normal", "restricted"]),
        "submitted_by": _text,
        "metadata": st.dictionaries(_text, _text, max_size=8),
    },
)
_DEFAULTS = {"priority": 0, "depends_on": [], "privacy": "normal", "submitted_by": "unknown", "metadata": {}}


@settings(max_examples=150, deadline=None)
@given(value=_tasks)
def test_task_round_trip_property(value: dict[str, Any]) -> None:
    codec = Codec()
    decoded = codec.decode(codec.encode("Task", value), expect="Task")
    expected = {**_DEFAULTS, **value}
    got = dict(decoded.value)
    assert exact_ms(got.pop("timestamp")) == expected.pop("timestamp")
    assert got == expected


def test_to_ms_is_exact_for_decoded_timestamps() -> None:
    codec = Codec()
    value = {**sample_value("Task"), "timestamp": 536870911}
    decoded = codec.decode(codec.encode("Task", value)).value["timestamp"]
    assert exact_ms(decoded) == 536870911  # the codec itself is exact
    assert to_ms(decoded) == 536870911  # to_ms returns 536870910


def test_register_names_the_subject_and_needs_a_registry(codec: Codec, registry: ConfluentRegistry) -> None:
    with pytest.raises(EncodeError, match="AIOS_SCHEMA_REGISTRY_URL"):
        codec.register("TaskResult", "aios.results")
    with_registry = Codec(registry=registry)
    schema_id = with_registry.register("TaskResult", "aios.results")
    assert registry._client.get_latest_version("aios.results-value").schema_id == schema_id
    data = with_registry.encode("TaskResult", sample_value("TaskResult"), topic="aios.results")
    assert int.from_bytes(data[1:5], "big") == schema_id
