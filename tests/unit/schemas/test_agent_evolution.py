"""Fields added for the router and the live registry: data written before them still reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from aios.schemas.codec import Codec, SchemaCatalog, load_catalog, parse_record_schema
from tests.unit.schemas import load_raw, sample_value, write_avsc


@pytest.mark.parametrize(("record", "added", "default"), [
    ("Assignment", "strategy", None),
    ("LlmCall", "strategy", "default"),
    ("LlmCall", "fallback_chain", []),
    ("LlmCall", "redacted", False),
    ("LlmCall", "queue_ms", 0.0),
    ("AgentStatus", "roles", []),
])
def test_old_data_reads_with_the_new_field_defaulted(tmp_path: Path, record: str, added: str,
                                                      default: object) -> None:
    old = load_raw(record)
    old["fields"] = [f for f in old["fields"] if f["name"] != added]
    write_avsc(tmp_path, old, f"{record}.v0.avsc")
    catalog = SchemaCatalog()
    catalog.add(parse_record_schema(old))
    value = {k: v for k, v in sample_value(record).items() if k != added}
    data = Codec(catalog).encode(record, value)

    decoded = Codec(load_catalog(extra_writer_dirs=[tmp_path])).decode(data, expect=record)

    assert decoded.value == {**value, added: default}
