"""Shared helpers for the schema tests: the .avsc files and a valid sample value for each."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aios.schemas.codec import AVRO_DIR

AVSC_FILES = sorted(AVRO_DIR.glob("*.avsc"))
RECORD_NAMES = [p.stem for p in AVSC_FILES]
ENVELOPE = ("event_id", "timestamp", "trace_id")
SAMPLE_TIME = datetime(2024, 5, 1, 12, 30, 45, 123000, tzinfo=UTC)


def load_raw(name: str) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads((AVRO_DIR / f"{name}.avsc").read_text())
    return raw


def sample_for_type(avro_type: Any, label: str) -> Any:
    """A valid, non-default value of ``avro_type`` (decodes back to an equal Python value)."""
    if isinstance(avro_type, list):  # the ["null", X] unions: pick the non-null branch
        branch = next(t for t in avro_type if t != "null")
        return sample_for_type(branch, label)
    if isinstance(avro_type, dict):
        if avro_type.get("logicalType") == "timestamp-millis":
            return SAMPLE_TIME
        kind = avro_type["type"]
        if kind == "enum":
            symbols = avro_type["symbols"]
            return symbols[1] if len(symbols) > 1 else symbols[0]
        if kind == "array":
            items = avro_type["items"]
            return [sample_for_type(items, f"{label}-0"), sample_for_type(items, f"{label}-1")]
        if kind == "map":
            values = avro_type["values"]
            return {"k1": sample_for_type(values, f"{label}-1"), "ключ": sample_for_type(values, f"{label}-2")}
        if kind == "record":  # a nested record type (e.g. the tasks of a ProjectPlan)
            return {f["name"]: sample_for_type(f["type"], f"{label}.{f['name']}") for f in avro_type["fields"]}
        return sample_for_type(kind, label)
    primitives: dict[str, Any] = {
        "string": f"{label}-ü✓🚀",
        "bytes": b"\x00\xff" + label.encode(),
        "int": 7,
        "long": 1_234_567_890_123,
        "double": 1.25,
        "float": 0.5,
        "boolean": True,
    }
    if avro_type in primitives:
        return primitives[avro_type]
    raise AssertionError(f"no sample for Avro type {avro_type!r}")


def sample_value(name: str) -> dict[str, Any]:
    """A complete, valid value of record ``name`` with every field set (none left to defaults)."""
    raw = load_raw(name)
    return {f["name"]: sample_for_type(f["type"], f["name"]) for f in raw["fields"]}


def write_avsc(directory: Path, raw: dict[str, Any], filename: str) -> Path:
    path = directory / filename
    path.write_text(json.dumps(raw))
    return path
