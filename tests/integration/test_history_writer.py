"""The sink's batch writer on real chdb: ClickHouse decodes the Avro, and stores what Python would."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from connectors.errors import StoreQueryError
from connectors.history.avro_ingest import FRAME_END, ContainerBuilder
from connectors.history.chdb_store import ChdbStore
from connectors.history.writer import Record, to_row, write_batch
from schemas.codec import Codec
from schemas.errors import UndecodableError
from schemas.events import envelope
from streams.bench_sink import task_events
from tests.integration.helpers import assert_stored_once, records, stored_events

pytestmark = pytest.mark.integration


@pytest.fixture
def store(session_data_dir: Path) -> ChdbStore:
    return ChdbStore.open(session_data_dir / "chdb")  # the one chdb directory of this process


def test_every_pipeline_event_type_is_decoded_by_clickhouse(store: ChdbStore) -> None:
    assert {"aios.v1.Task", "aios.v1.Assignment", "aios.v1.TaskResult", "aios.v1.AgentMessage",
            "aios.v1.MemoryEvent", "aios.v1.LlmCall", "aios.v1.AgentStatus"} <= set(store.ingest)
    assert "aios.v1.DeadLetter" not in store.ingest  # bytes: decoded in Python, payload in base64


def test_native_rows_match_what_the_python_path_builds(store: ChdbStore) -> None:
    codec = Codec(validate=False)
    project = f"w-{uuid.uuid4().hex[:8]}"
    batch = records(codec, project)
    result = write_batch(store, codec, batch)
    assert (result.stored, result.native, result.rejected, result.refused) == (12, 12, [], None)

    assert_stored_once(store, codec, batch, project)
    expected = to_row(codec.decode(batch[-1].value), batch[-1].topic, batch[-1].partition, batch[-1].offset)
    ts = store.query(f"SELECT toUnixTimestamp64Milli(ts) AS ms FROM aios.events FINAL "  # noqa: S608
                     f"WHERE event_id = '{expected.event_id}'")
    assert int(ts[0]["ms"]) == expected.ts

    failed = store.query(f"SELECT status, error, input_tokens FROM aios.results FINAL WHERE project_id = '{project}' "  # noqa: S608
                         "ORDER BY status")
    assert [(r["status"], r["error"], int(r["input_tokens"])) for r in failed] == [
        ("failed", "boom", 42), ("succeeded", "", 42)]
    memory = store.query(f"SELECT task_id, tokens FROM aios.memory FINAL WHERE project_id = '{project}'")  # noqa: S608
    assert len(memory) == 2 and all(r["task_id"] and int(r["tokens"]) == 17 for r in memory)
    calls = store.query(f"SELECT ttft_ms FROM aios.llm_calls FINAL WHERE project_id = '{project}'")  # noqa: S608
    assert [r["ttft_ms"] for r in calls] == [None, None]

    again = write_batch(store, codec, batch)  # a redelivery: same event ids
    assert again.stored == 12
    assert len(stored_events(store, project)) == 12
    states = store.query("SELECT uniqExactMerge(events) AS n FROM aios.task_states_1m "  # noqa: S608
                         f"WHERE project_id = '{project}'")
    assert int(states[0]["n"]) == 6  # 2 submitted + 2 assigned + 2 results, counted once each


def test_a_corrupt_body_is_rejected_and_the_rest_of_its_batch_stored(store: ChdbStore) -> None:
    codec = Codec(validate=False)
    project = f"w-{uuid.uuid4().hex[:8]}"
    batch = records(codec, project)
    truncated = Record(batch[0].topic, 0, 1, batch[0].value[:-30] if batch[0].value else None)
    garbage = Record("w.tasks", 0, 2, b"\x07 not avro at all")
    result = write_batch(store, codec, [truncated, garbage, *batch[1:]])
    assert [r for r, _ in result.rejected] == [garbage, truncated]
    assert all(isinstance(exc, UndecodableError) for _, exc in result.rejected)
    # ClickHouse refused the batch for the truncated body (its frame mark landed on the next
    # event's bytes), so Python decoded the batch and stored the rest as the Python path does.
    assert (result.stored, result.native) == (11, 0)
    assert result.refused is not None  # ClickHouse's reason, which the sink logs
    assert_stored_once(store, codec, batch[1:], project)
    assert len(stored_events(store, project)) == 11


def with_description(codec: Codec, record: Record, value: dict[str, Any], raw: bytes) -> Record:
    """``record`` re-encoded with a description whose UTF-8 is then replaced by ``raw`` (same length)."""
    text = "x" * len(raw)
    encoded = codec.encode("Task", {**value, "description": text})
    assert encoded.count(text.encode()) == 1
    return Record(record.topic, record.partition, record.offset, encoded.replace(text.encode(), raw))


def test_a_string_that_is_not_utf8_is_rejected_as_the_python_path_rejects_it(store: ChdbStore) -> None:
    codec = Codec(validate=False)
    project = f"w-{uuid.uuid4().hex[:8]}"
    batch = records(codec, project)
    task = codec.decode(batch[0].value).value
    bad = with_description(codec, batch[0], task, b"\xff\xfe bad")
    result = write_batch(store, codec, [bad, *batch[1:]])
    assert [r for r, _ in result.rejected] == [bad]
    assert "utf-8" in str(result.rejected[0][1])
    assert result.stored == 11
    assert_stored_once(store, codec, batch[1:], project)
    assert store.query(f"SELECT count() AS n FROM aios.tasks WHERE event_id = '{task['event_id']}'")[0]["n"] == 0  # noqa: S608


def test_a_body_with_bytes_past_its_end_is_stored_as_fastavro_reads_it(store: ChdbStore) -> None:
    # Natively, the extra bytes would be read as the next event's start: the frame mark catches
    # that, and the batch is stored through Python, which skips them as fastavro does.
    codec = Codec(validate=False)
    project = f"w-{uuid.uuid4().hex[:8]}"
    batch = records(codec, project)
    padded = Record(batch[0].topic, batch[0].partition, batch[0].offset, (batch[0].value or b"") + b"\x02\x04xx")
    result = write_batch(store, codec, [padded, *batch[1:]])
    assert (result.stored, result.native, result.rejected) == (12, 0, [])
    assert_stored_once(store, codec, batch, project)


def test_a_misread_record_fails_the_frame_check(store: ChdbStore) -> None:
    codec = Codec(validate=False)
    project = f"w-{uuid.uuid4().hex[:8]}"
    record = records(codec, project, tasks=1)[0]
    table = store.ingest["aios.v1.Task"]
    writer, body, _ = codec.frame(record.value)
    builder = ContainerBuilder(table)
    builder.add(record.topic, record.partition, record.offset, body)
    container = builder.build()
    assert container.count(FRAME_END) == 1
    with pytest.raises(StoreQueryError, match="framed"):
        store.insert_avro([(table, container.replace(FRAME_END, b"\x00" * len(FRAME_END)))])
    assert stored_events(store, project) == {}
    store.insert_avro([(table, container)])
    assert list(stored_events(store, project)) == [codec.decode(record.value).value["event_id"]]


def test_record_types_without_an_ingest_table_take_the_python_path(store: ChdbStore,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    codec = Codec(validate=False)
    project = f"w-{uuid.uuid4().hex[:8]}"
    batch = records(codec, project, tasks=1)
    # As for an older writer version of Task, or a type whose schema the mapping does not cover.
    monkeypatch.setattr(store, "ingest", {k: v for k, v in store.ingest.items() if k != "aios.v1.Task"})
    result = write_batch(store, codec, batch)
    assert (result.stored, result.native) == (6, 5)
    got = stored_events(store, project)
    assert sorted(r["event_type"] for r in got.values()) == sorted(name for name, _ in task_events(0))
    tasks = store.query(f"SELECT count() AS n FROM aios.tasks FINAL WHERE project_id = '{project}'")  # noqa: S608
    assert int(tasks[0]["n"]) == 1


def test_the_python_path_stores_each_event_once_too(store: ChdbStore, monkeypatch: pytest.MonkeyPatch) -> None:
    codec = Codec(validate=False)
    project = f"w-{uuid.uuid4().hex[:8]}"
    control = {**envelope(), "project_id": project, "action": "cancel", "task_id": None, "reason": "test",
               "requested_by": "w"}  # no typed table: its JSON stays in events.payload
    batch = [*records(codec, project), Record("w.control", 0, 7, codec.encode("Control", control))]
    monkeypatch.setattr(store, "ingest", {})  # every record type through Python
    result = write_batch(store, codec, batch)
    assert (result.stored, result.native, result.rejected) == (13, 0, [])
    assert_stored_once(store, codec, batch, project)


def test_a_batch_of_every_record_type_is_one_insert(store: ChdbStore, monkeypatch: pytest.MonkeyPatch) -> None:
    codec = Codec(validate=False)
    project = f"w-{uuid.uuid4().hex[:8]}"
    statements: list[str] = []
    run = store._run

    def spy(sql: str, fmt: str = "CSV") -> Any:
        statements.append(sql)
        return run(sql, fmt)

    monkeypatch.setattr(store, "_run", spy)
    result = write_batch(store, codec, records(codec, project, tasks=3))
    assert (result.stored, result.native) == (18, 18)
    assert [s.split(" SELECT")[0] for s in statements if s.startswith("INSERT")] == [
        f"INSERT INTO aios.{store.ingest['aios.v1.Task'].table}"]
    assert len(stored_events(store, project)) == 18
    typed = {t: store.query(f"SELECT count() AS n FROM aios.{t} FINAL WHERE project_id = '{project}'")  # noqa: S608
             for t in ("tasks", "assignments", "results", "messages", "memory", "llm_calls")}
    assert {t: int(r[0]["n"]) for t, r in typed.items()} == dict.fromkeys(typed, 3)


def test_a_duplicate_within_one_batch_collapses_under_final(store: ChdbStore) -> None:
    # The ingest INSERT skips collapsing at insert time (optimize_on_insert = 0): FINAL does it.
    codec = Codec(validate=False)
    project = f"w-{uuid.uuid4().hex[:8]}"
    batch = records(codec, project, tasks=1)
    result = write_batch(store, codec, batch + batch)
    assert (result.stored, result.native) == (12, 12)
    assert len(stored_events(store, project)) == 6
    assert store.count_events(project_id=project) == 6
    n = store.query(f"SELECT count() AS n FROM aios.results FINAL WHERE project_id = '{project}'")  # noqa: S608
    assert int(n[0]["n"]) == 1
    states = store.query("SELECT uniqExactMerge(events) AS n FROM aios.task_states_1m "  # noqa: S608
                         f"WHERE project_id = '{project}'")
    assert int(states[0]["n"]) == 3
