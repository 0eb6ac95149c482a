"""The aios_transcoder extension on its own: which events it takes, which it leaves to Python, misuse.

What ClickHouse reads from its blocks is checked against real chdb in
tests/integration/test_history_writer.py.
"""

from __future__ import annotations

import io
import random
import re
from dataclasses import dataclass
from typing import Any

import fastavro
import pytest
from aios_transcoder import Transcoder

HEADER = b"\xc3\x01" + bytes(range(8))
SCHEMA = fastavro.parse_schema({"type": "record", "name": "R", "fields": [
    {"name": "s", "type": "string"},
    {"name": "n", "type": "int"},
    {"name": "l", "type": "long"},
    {"name": "f", "type": "float"},
    {"name": "d", "type": "double"},
    {"name": "b", "type": "boolean"},
    {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["a", "b"]}},
    {"name": "o", "type": ["null", "string"]},
    {"name": "arr", "type": {"type": "array", "items": "string"}},
    {"name": "m", "type": {"type": "map", "values": "long"}},
]})
PLAN = [("s", "String", "string"), ("n", "Int32", "int"), ("l", "Int64", "long"), ("f", "Float32", "float"),
        ("d", "Float64", "double"), ("b", "Bool", "boolean"), ("e", "String", ("enum", ["a", "b"])),
        ("o", "Nullable(String)", ("null_first", "string")), ("arr", "Array(String)", ("array", "string")),
        ("m", "Map(String, Int64)", ("map", "long"))]
META = ["_type", "_topic", "_partition", "_offset"]
VALUE = {"s": "héllo", "n": -7, "l": 2**40, "f": 1.5, "d": -2.25, "b": True, "e": "b", "o": None,
         "arr": ["x", "y"], "m": {"k": 3}}


@dataclass(frozen=True)
class Rec:
    topic: str
    partition: int
    offset: int
    value: Any


def body(**changes: Any) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, SCHEMA, {**VALUE, **changes})
    return out.getvalue()


def transcoder() -> Transcoder:
    t = Transcoder(META, [("R", PLAN)])
    t.learn(HEADER, 0)
    return t


def run(*values: Any) -> tuple[int, list[int], list[tuple[bytes, int]]]:
    block, taken, left, unknown = transcoder().transcode([Rec("t", 0, i, v) for i, v in enumerate(values)])
    assert (len(block) > 0) == (taken > 0)
    return taken, left, unknown


def test_a_well_formed_event_is_taken() -> None:
    assert run(HEADER + body(), HEADER + body(o="set", arr=[], m={})) == (2, [], [])


def test_a_confluent_framed_event_is_taken_once_its_schema_id_is_learned() -> None:
    t = transcoder()
    framed = b"\x00\x00\x00\x00\x2a" + body()
    assert t.transcode([Rec("t", 0, 0, framed)])[1:] == (0, [0], [(framed[:5], 0)])
    t.learn(framed[:5], 0)
    assert t.transcode([Rec("t", 0, 0, framed)])[1:] == (1, [], [])


def corrupt(valid: bytes) -> dict[str, bytes]:
    """Bodies the transcoder must leave to Python, each for one reason."""
    bad_utf8 = body(s="ab").replace(b"ab", b"a\xff")
    bad_key = body(m={"kk": 1}).replace(b"kk", b"k\xfe")
    return {
        "truncated": valid[:-1],
        "trailing byte": valid + b"\x00",
        "string not UTF-8": bad_utf8,
        "map key not UTF-8": bad_key,
        "enum index past the symbols": with_field(valid, "e", b"\x04"),
        "union branch 2": with_field(valid, "o", b"\x04"),
        "boolean byte 2": with_field(valid, "b", b"\x02"),
        "int past 32 bits": with_field(valid, "n", b"\x80\x80\x80\x80\x20"),
        "varint of 11 bytes": with_field(valid, "l", b"\xff" * 10 + b"\x01"),
        "negative string length": with_field(valid, "s", b"\x01"),
    }


def with_field(valid: bytes, name: str, raw: bytes) -> bytes:
    """``valid`` with field ``name``'s encoding replaced by ``raw`` (the fields before it kept)."""
    names = [f for f, _, _ in PLAN]
    cut = names.index(name)
    prefix = io.BytesIO()
    fastavro.schemaless_writer(prefix, fastavro.parse_schema({"type": "record", "name": "P", "fields": [
        f for f in SCHEMA["fields"][:cut]]}) if cut else {"type": "record", "name": "P0", "fields": []},
        {k: VALUE[k] for k in names[:cut]})
    rest = io.BytesIO()
    fastavro.schemaless_writer(rest, fastavro.parse_schema({"type": "record", "name": "S", "fields": [
        _renamed(f) for f in SCHEMA["fields"][cut + 1:]]}), {k: VALUE[k] for k in names[cut + 1:]})
    return prefix.getvalue() + raw + rest.getvalue()


def _renamed(field: dict[str, Any]) -> dict[str, Any]:
    # a second parse of the named enum type needs another name
    kind = field["type"]
    if isinstance(kind, dict) and kind.get("type") == "enum":
        return {**field, "type": {**kind, "name": "E2"}}
    return field


@pytest.mark.parametrize("reason", list(corrupt(body())))
def test_a_body_that_does_not_read_whole_is_left_to_python(reason: str) -> None:
    bad = corrupt(body())[reason]
    assert run(HEADER + body(), HEADER + bad, HEADER + body()) == (2, [1], [])


def test_events_it_cannot_frame_are_left_and_new_headers_reported_once() -> None:
    other = b"\xc3\x01" + b"\xff" * 8
    assert run(None, "text", b"", b"\x05abcdef", other + body(), other + body(), HEADER + body()) == (
        1, [0, 1, 2, 3, 4, 5], [(other, 4)])


def test_random_damage_never_crashes_and_every_event_is_taken_or_left() -> None:
    rng = random.Random(7)
    valid = body(arr=["one", "two", "three"], m={"a": 1, "b": -1}, o="x")
    values = []
    for _ in range(3000):
        damaged = bytearray(valid)
        for _ in range(rng.randint(1, 4)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        values.append(HEADER + bytes(damaged[: rng.randint(0, len(damaged) + 2)]))
    taken, left, _ = run(*values)
    assert taken + len(left) == len(values) and taken > 0 and left


@pytest.mark.parametrize(("records", "message"), [
    ([("R", [("s", "Int32", "string")])], "field s of R cannot fill a column Int32"),
    ([("R", [("o", "String", ("null_first", "string"))])], "field o of R cannot fill a column String"),
    ([("R", [("_topic", "String", "string")])], "field _topic of R"),
    ([("R", [("s", "Decimal(9, 2)", "string")])], "column type Decimal(9, 2) is not supported"),
    ([("R", [("s", "String", "bytes")])], 'unknown Avro type "bytes"'),
    ([("R", [("s", "String", ("union", "string"))])], 'unknown Avro type "union"'),
])
def test_a_plan_that_does_not_fit_is_refused_with_the_reason(records: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Transcoder(META, records)


def test_learning_a_plan_that_does_not_exist_is_refused() -> None:
    with pytest.raises(ValueError, match="no record plan 3"):
        Transcoder(META, [("R", PLAN)]).learn(HEADER, 3)


def test_an_encoder_needs_record_types_of_one_ingest_table() -> None:
    from aios.connectors.history.ingest import IngestTable
    from aios.connectors.history.transcode import NativeEncoder

    def table(name: str, ingest: str) -> IngestTable:
        return IngestTable(name, name, b"f" * 8, ingest, (("s", "String", "string"),), "s String")

    with pytest.raises(ValueError, match=re.escape("must share exactly one ingest table (they use [])")):
        NativeEncoder({})
    with pytest.raises(ValueError, match=re.escape("(they use ['ingest_a', 'ingest_b'])")):
        NativeEncoder({"A": table("A", "ingest_a"), "B": table("B", "ingest_b")})
    assert NativeEncoder({"A": table("A", "ingest_a")}).table == "ingest_a"
