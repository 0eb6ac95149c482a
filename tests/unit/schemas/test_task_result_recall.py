"""TaskResult gained ``recall`` (memory ids used in the prompt): old data still reads, as []."""

from __future__ import annotations

from pathlib import Path

from aios.schemas.codec import Codec, SchemaCatalog, load_catalog, parse_record_schema
from tests.unit.schemas import load_raw, sample_value, write_avsc


def test_task_results_written_before_recall_read_with_an_empty_recall(tmp_path: Path) -> None:
    old = load_raw("TaskResult")
    old["fields"] = [f for f in old["fields"] if f["name"] != "recall"]
    write_avsc(tmp_path, old, "TaskResult.v0.avsc")
    catalog = SchemaCatalog()
    catalog.add(parse_record_schema(old))
    value = {k: v for k, v in sample_value("TaskResult").items() if k != "recall"}
    data = Codec(catalog).encode("TaskResult", value)

    decoded = Codec(load_catalog(extra_writer_dirs=[tmp_path])).decode(data, expect="TaskResult")

    assert decoded.value == {**value, "recall": []}
