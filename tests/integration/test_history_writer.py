"""The sink's batch writer on real chdb: the transcoder's Native blocks store what Python would."""

from __future__ import annotations

import io
import logging
import math
import random
import struct
import uuid
from pathlib import Path
from typing import Any

import fastavro
import pytest

from aios.bench.sink import task_events
from aios.connectors.errors import StoreQueryError
from aios.connectors.history import transcode
from aios.connectors.history.chdb_store import ChdbStore
from aios.connectors.history.transcode import NativeEncoder
from aios.connectors.history.writer import Record, to_row, write_batch
from aios.schemas.codec import Codec
from aios.schemas.errors import UndecodableError
from aios.schemas.events import envelope
from tests.integration.helpers import assert_stored_once, records, stored_events
from tests.unit.connectors.test_transcoder import (
    HEADER,
    META,
    PLAN,
    SCHEMA,
    VALUE,
    Rec,
    body,
    transcoder,
    with_field,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def store(session_data_dir: Path) -> ChdbStore:
    return ChdbStore.open(session_data_dir / "chdb")  # the one chdb directory of this process


def test_every_pipeline_event_type_goes_through_the_transcoder(store: ChdbStore) -> None:
    assert {"aios.v1.Task", "aios.v1.Assignment", "aios.v1.TaskResult", "aios.v1.AgentMessage",
            "aios.v1.MemoryEvent", "aios.v1.LlmCall", "aios.v1.AgentStatus"} <= set(store.ingest)
    assert "aios.v1.DeadLetter" not in store.ingest  # bytes: decoded in Python, payload in base64
    assert store.encoder is not None


def test_clickhouse_reads_every_avro_type_from_the_native_blocks_as_fastavro_does(store: ChdbStore,
                                                                                    tmp_path: Path) -> None:
    blocked = b"\x03\x08\x02x\x02y\x00"  # ["x", "y"] as one block with a negative count and its size in bytes
    values = [HEADER + body(), HEADER + body(o="set", arr=[], m={}, n=-(2**31), l=-(2**63), s=""),
              HEADER + with_field(body(), "arr", blocked)]
    block, taken, left, _ = transcoder().transcode([Rec(f"t{i}", i, 2**40 + i, v) for i, v in enumerate(values)])
    assert (taken, left) == (3, [])
    path = tmp_path / "block.native"
    path.write_bytes(block)
    rows = store.query(f"SELECT * FROM file('{path}', 'Native') ORDER BY _offset "  # noqa: S608 - our path
                       "SETTINGS output_format_json_quote_64bit_integers = 0")
    expected = [VALUE, {**VALUE, "o": "set", "arr": [], "m": {}, "n": -(2**31), "l": -(2**63), "s": ""},
                {**VALUE, "arr": ["x", "y"]}]
    for i, (row, want) in enumerate(zip(rows, expected, strict=True)):
        assert {k: row[k] for k in want} == want
        assert (row["_type"], row["_topic"], row["_partition"], row["_offset"]) == ("R", f"t{i}", i, 2**40 + i)
    assert [name for name, _, _ in PLAN] + META == list(rows[0])


def test_damaged_bodies_the_transcoder_takes_read_in_clickhouse_as_fastavro_reads_them(store: ChdbStore,
                                                                                        tmp_path: Path) -> None:
    # A damaged body that still reads whole is valid Avro of other values: ClickHouse must get
    # exactly those values, field by field, as fastavro decodes the same bytes.
    rng = random.Random(11)
    valid = body(arr=["one", "two"], m={"a": 1, "b": -1}, o="text", s="a longer string")
    values = []
    for _ in range(4000):
        damaged = bytearray(valid)
        for _ in range(rng.randint(1, 3)):
            damaged[rng.randrange(len(damaged))] = rng.choice((rng.randrange(256), rng.randrange(0x20, 0x7f)))
        values.append(bytes(damaged))
    block, taken, left, _ = transcoder().transcode([Rec("t", 0, i, HEADER + v) for i, v in enumerate(values)])
    assert 100 < taken < len(values) - 100, "the damage should leave some bodies readable and break others"
    path = tmp_path / "damaged.native"
    path.write_bytes(block)
    rows = store.query(f"SELECT * FROM file('{path}', 'Native') ORDER BY _offset "  # noqa: S608 - our path
                       "SETTINGS output_format_json_quote_64bit_integers = 0")
    kept = [i for i in range(len(values)) if i not in set(left)]
    assert [row["_offset"] for row in rows] == kept
    for row in rows:
        want = fastavro.schemaless_reader(io.BytesIO(values[row["_offset"]]), SCHEMA, SCHEMA)
        assert isinstance(want, dict)
        for name in ("f", "d"):  # Float32 prints as its shortest form; NaN and infinities as null
            got, exact = row.pop(name), want.pop(name)
            if math.isfinite(exact):
                fmt = "<f" if name == "f" else "<d"
                assert struct.pack(fmt, got) == struct.pack(fmt, exact), (name, got, exact)
        assert {k: row[k] for k in want} == want


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


@pytest.mark.parametrize("native", [True, False])
def test_an_llm_call_keeps_whether_its_prompt_was_redacted(store: ChdbStore, monkeypatch: pytest.MonkeyPatch,
                                                           native: bool) -> None:
    codec = Codec(validate=False)
    project = f"w-{uuid.uuid4().hex[:8]}"
    calls = [next(value for name, value in task_events(i) if name == "LlmCall") for i in range(2)]
    for call, redacted in zip(calls, (True, False), strict=True):
        call.update(project_id=project, redacted=redacted)
    if not native:
        monkeypatch.setattr(store, "encoder", None)
    result = write_batch(store, codec, [Record("w.llm-calls", 0, i, codec.encode("LlmCall", c))
                                        for i, c in enumerate(calls)])
    assert (result.stored, result.native) == (2, 2 if native else 0)
    rows = store.query(f"SELECT call_id, redacted FROM aios.llm_calls FINAL WHERE project_id = '{project}'")  # noqa: S608
    assert {r["call_id"]: r["redacted"] for r in rows} == {calls[0]["call_id"]: True, calls[1]["call_id"]: False}


@pytest.mark.parametrize("native", [True, False])
def test_an_llm_call_keeps_how_long_it_waited_for_the_router(store: ChdbStore, monkeypatch: pytest.MonkeyPatch,
                                                             native: bool) -> None:
    codec = Codec(validate=False)
    project = f"w-{uuid.uuid4().hex[:8]}"
    calls = [next(value for name, value in task_events(i) if name == "LlmCall") for i in range(2)]
    for call, waited in zip(calls, (1234.5, 0.0), strict=True):
        call.update(project_id=project, queue_ms=waited)
    if not native:
        monkeypatch.setattr(store, "encoder", None)
    result = write_batch(store, codec, [Record("w.llm-calls", 0, i, codec.encode("LlmCall", c))
                                        for i, c in enumerate(calls)])
    assert (result.stored, result.native) == (2, 2 if native else 0)
    rows = store.query(f"SELECT call_id, queue_ms FROM aios.llm_calls FINAL WHERE project_id = '{project}'")  # noqa: S608
    assert {r["call_id"]: float(r["queue_ms"]) for r in rows} == {calls[0]["call_id"]: 1234.5,
                                                                 calls[1]["call_id"]: 0.0}


def test_a_corrupt_body_is_rejected_and_the_rest_of_its_batch_stored(store: ChdbStore) -> None:
    codec = Codec(validate=False)
    project = f"w-{uuid.uuid4().hex[:8]}"
    batch = records(codec, project)
    truncated = Record(batch[0].topic, 0, 1, batch[0].value[:-30] if batch[0].value else None)
    garbage = Record("w.tasks", 0, 2, b"\x07 not avro at all")
    result = write_batch(store, codec, [truncated, garbage, *batch[1:]])
    # the transcoder left both to Python, which rejects them; the rest went in as Native blocks
    assert sorted(str(r.value) for r, _ in result.rejected) == sorted([str(garbage.value), str(truncated.value)])
    assert all(isinstance(exc, UndecodableError) for _, exc in result.rejected)
    assert (result.stored, result.native, result.refused) == (11, 11, None)
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
    assert (result.stored, result.native) == (11, 11)
    assert_stored_once(store, codec, batch[1:], project)
    assert store.query(f"SELECT count() AS n FROM aios.tasks WHERE event_id = '{task['event_id']}'")[0]["n"] == 0  # noqa: S608


def test_a_body_with_bytes_past_its_end_is_stored_as_fastavro_reads_it(store: ChdbStore) -> None:
    # The transcoder leaves a body that does not end where its schema says to Python, which
    # skips the extra bytes as fastavro does.
    codec = Codec(validate=False)
    project = f"w-{uuid.uuid4().hex[:8]}"
    batch = records(codec, project)
    padded = Record(batch[0].topic, batch[0].partition, batch[0].offset, (batch[0].value or b"") + b"\x02\x04xx")
    result = write_batch(store, codec, [padded, *batch[1:]])
    assert (result.stored, result.native, result.rejected) == (12, 11, [])
    assert_stored_once(store, codec, batch, project)


def test_when_clickhouse_refuses_the_blocks_python_decodes_the_batch(store: ChdbStore,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    codec = Codec(validate=False)
    project = f"w-{uuid.uuid4().hex[:8]}"
    batch = records(codec, project)

    def refuse(table: str, structure: str, blocks: bytes) -> None:
        raise StoreQueryError("chdb: Code: 27. Cannot parse input")

    monkeypatch.setattr(store, "insert_native", refuse)
    result = write_batch(store, codec, batch)
    assert (result.stored, result.native, result.rejected) == (12, 0, [])
    assert result.refused == "chdb: Code: 27. Cannot parse input"  # the sink logs it and counts the refusal
    assert_stored_once(store, codec, batch, project)


def test_record_types_without_an_ingest_table_take_the_python_path(store: ChdbStore,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    codec = Codec(validate=False)
    project = f"w-{uuid.uuid4().hex[:8]}"
    batch = records(codec, project, tasks=1)
    # As for an older writer version of Task, or a type whose schema the mapping does not cover.
    monkeypatch.setattr(store, "encoder", NativeEncoder({k: v for k, v in store.ingest.items() if k != "aios.v1.Task"}))
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
    monkeypatch.setattr(store, "encoder", None)  # every record type through Python, as without the transcoder
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


def test_without_the_transcoder_the_store_says_so_and_python_decodes_everything(
        store: ChdbStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    codec = Codec(validate=False)
    project = f"w-{uuid.uuid4().hex[:8]}"
    batch = records(codec, project)
    monkeypatch.setattr(transcode, "AVAILABLE", False)  # as where `make install` could not build it
    try:
        with caplog.at_level(logging.WARNING, logger="aios.connectors.history.base"):
            store.setup()
        assert store.encoder is None
        assert "aios_transcoder extension is not installed (run `make install`)" in caplog.text
        result = write_batch(store, codec, batch)
        assert (result.stored, result.native, result.rejected) == (12, 0, [])
        assert_stored_once(store, codec, batch, project)
    finally:
        monkeypatch.undo()
        store.setup()
    assert store.encoder is not None
