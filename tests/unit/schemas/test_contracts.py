"""The .avsc contracts: envelope, naming, and the errors the codec raises for bad values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from aios.schemas.codec import Codec, load_catalog
from aios.schemas.errors import EncodeError, SchemaError, UnknownSchemaError
from tests.unit.schemas import AVSC_FILES, ENVELOPE, RECORD_NAMES, load_raw, sample_value


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec()


def test_every_contract_is_present() -> None:
    # The eight from the design card, the orchestrator's plan, control and status records, live tokens.
    assert sorted(RECORD_NAMES) == sorted(
        ["Task", "Assignment", "TaskResult", "AgentMessage", "MemoryEvent", "LlmCall", "AgentStatus", "DeadLetter",
         "ProjectPlan", "Control", "ProjectStatus", "TokenDelta"]
    )
    catalog = load_catalog()
    assert sorted(catalog.current) == sorted(f"aios.v1.{n}" for n in RECORD_NAMES)
    assert len({s.fingerprint for s in catalog.current.values()}) == len(RECORD_NAMES)


@pytest.mark.parametrize("path", AVSC_FILES, ids=[p.stem for p in AVSC_FILES])
def test_avsc_header(path: Path) -> None:
    raw = json.loads(path.read_text())
    assert raw["type"] == "record"
    assert raw["namespace"] == "aios.v1"
    assert raw["name"] == path.stem, "the file name must match the record name"


@pytest.mark.parametrize("path", AVSC_FILES, ids=[p.stem for p in AVSC_FILES])
def test_avsc_envelope(path: Path) -> None:
    fields = {f["name"]: f for f in json.loads(path.read_text())["fields"]}
    assert fields["event_id"]["type"] == "string"
    assert fields["timestamp"]["type"] == {"type": "long", "logicalType": "timestamp-millis"}
    assert fields["trace_id"]["type"] == "string"
    assert [f for f in fields][: len(ENVELOPE)] == list(ENVELOPE)
    assert len(fields) == len(json.loads(path.read_text())["fields"]), "duplicate field names"


def _required(name: str) -> list[str]:
    return [f["name"] for f in load_raw(name)["fields"] if "default" not in f]


def _wrong_typed(name: str) -> list[tuple[str, Any]]:
    """(field, wrong value) pairs: an int where a string is valid, a string for everything else."""
    cases: list[tuple[str, Any]] = []
    for field in load_raw(name)["fields"]:
        branches = field["type"] if isinstance(field["type"], list) else [field["type"]]
        wrong: Any = 12345 if "string" in branches else "not-the-right-type"
        cases.append((field["name"], wrong))
    return cases


@pytest.mark.parametrize(
    ("name", "missing"), [(n, f) for n in RECORD_NAMES for f in _required(n)], ids=lambda v: str(v)
)
def test_missing_required_field_is_encode_error(codec: Codec, name: str, missing: str) -> None:
    value = sample_value(name)
    del value[missing]
    with pytest.raises(EncodeError, match=missing):
        codec.encode(name, value)


@pytest.mark.parametrize(
    ("name", "field", "wrong"), [(n, f, w) for n in RECORD_NAMES for f, w in _wrong_typed(n)], ids=str
)
def test_wrong_type_is_encode_error(codec: Codec, name: str, field: str, wrong: Any) -> None:
    value = {**sample_value(name), field: wrong}
    with pytest.raises(EncodeError) as info:
        codec.encode(name, value)
    assert isinstance(info.value, SchemaError)
    assert name in str(info.value)


@pytest.mark.parametrize(
    ("field", "wrong"),
    [
        ("priority", 2**31),  # beyond Avro int: Java readers would reject it
        ("priority", -(2**31) - 1),
        ("priority", 2**70),
        ("priority", 1.5),  # would be truncated to 1
        ("priority", True),
        ("timestamp", 2**64),  # beyond Avro long
        ("depends_on", [1, 2]),
        ("depends_on", "abc"),
        ("metadata", {"k": 1}),
        ("description", None),
        ("description", b"bytes"),
    ],
    ids=str,
)
def test_out_of_range_and_mistyped_values_are_encode_errors(codec: Codec, field: str, wrong: Any) -> None:
    with pytest.raises(EncodeError, match=field):
        codec.encode("Task", {**sample_value("Task"), field: wrong})


def test_extra_field_and_bad_enum_are_encode_errors(codec: Codec) -> None:
    with pytest.raises(EncodeError, match="more fields"):
        codec.encode("Task", {**sample_value("Task"), "unexpected": "x"})
    with pytest.raises(EncodeError):
        codec.encode("AgentStatus", {**sample_value("AgentStatus"), "state": "sleeping"})
    with pytest.raises(EncodeError):
        codec.encode("Task", ["not", "a", "mapping"])  # type: ignore[arg-type]


def test_int_boundaries_still_encode(codec: Codec) -> None:
    for priority in (2**31 - 1, -(2**31)):
        data = codec.encode("Task", {**sample_value("Task"), "priority": priority})
        assert codec.decode(data).value["priority"] == priority


def test_unknown_record_name_lists_known_names(codec: Codec) -> None:
    with pytest.raises(UnknownSchemaError) as info:
        codec.encode("Nope", {})
    message = str(info.value)
    assert "'Nope'" in message
    for name in RECORD_NAMES:
        assert name in message
    with pytest.raises(UnknownSchemaError, match="known: AgentMessage, AgentStatus"):
        load_catalog().get("aios.v1.Nope")
