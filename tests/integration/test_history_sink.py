"""The history sink on its own (as `aios worker history` runs it): rows in chdb, garbage to the DLQ."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from prometheus_client import REGISTRY

from aios.bench.sink import task_events
from aios.connectors.errors import StoreQueryError
from aios.connectors.history.chdb_store import ChdbStore
from aios.schemas.codec import Codec
from aios.streams.kafka import EventProducer, TopicReader
from aios.streams.pipeline import running
from aios.streams.readmodels.task_client import build_task
from aios.streams.settings import Settings

pytestmark = pytest.mark.integration


async def test_history_worker_stores_rows_and_dead_letters_garbage(settings: Settings,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    p = settings.kafka.topic_prefix
    producer = EventProducer(settings)
    task = build_task("stored by the sink", project="sink-only")
    producer.send(f"{p}.tasks", "Task", task, key=task["task_id"])
    producer.send(f"{p}.tasks", "Task", task, key=task["task_id"])  # a redelivery: same event_id
    producer.send_raw(f"{p}.results", b"\x00\x00\x00\x00\x09garbage", key="bad")  # Confluent-framed, no registry
    # Framed as a current TaskResult but cut short: the transcoder leaves it to Python, which rejects it.
    result = dict(next(v for name, v in task_events(0) if name == "TaskResult"))
    truncated = Codec().encode("TaskResult", result)[:-30]
    producer.send_raw(f"{p}.results", truncated, key="short")
    producer.flush()
    refused_before = REGISTRY.get_sample_value("aios_sink_native_refused_total") or 0.0
    python_before = REGISTRY.get_sample_value("aios_sink_python_decoded_total") or 0.0
    # ClickHouse refuses the first Native INSERT: the sink counts it, and Python stores that batch.
    real_insert, calls = ChdbStore.insert_native, []

    def refuse_first(store: ChdbStore, table: str, structure: str, blocks: bytes) -> None:
        calls.append(table)
        if len(calls) == 1:
            raise StoreQueryError("chdb: refused for the test")
        real_insert(store, table, structure, blocks)

    monkeypatch.setattr(ChdbStore, "insert_native", refuse_first)

    async with running(settings, ["history"]) as live:
        store = live.runtime.store
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and store.count_events(project_id="sink-only") < 1:
            await asyncio.sleep(0.2)
        live.check()
        assert store.count_events(project_id="sink-only") == 1, "the duplicate collapses on event_id"
        rows = store.query(f"SELECT count() AS n FROM aios.events WHERE topic = '{p}.tasks'")  # noqa: S608
        assert int(rows[0]["n"]) in (1, 2)  # both copies may sit in unmerged parts; FINAL sees one
        # The bad results may come in a later batch than the tasks: wait for their letters while
        # the sink still runs. The reader blocks, so it reads in a thread: on this event loop it
        # would starve the sink, whose next batch then never comes (CI failed that way under load).
        letters: list[dict[str, Any]] = []
        undecoded: list[str] = []

        def read_dlq() -> list[Any]:
            reader = TopicReader(settings, f"{p}.dlq", from_beginning=True)
            try:
                return [d for _, d in reader.events(timeout_s=2)]
            finally:
                reader.close()

        while time.monotonic() < deadline + 30 and len(letters) < 2:
            read = await asyncio.to_thread(read_dlq)
            letters = [d.value for d in read if not isinstance(d, Exception)]
            undecoded = [str(d) for d in read if isinstance(d, Exception)]
        counted = REGISTRY.get_sample_value("aios_dead_letters_total",
                                            {"processor": "history", "source_topic": f"{p}.results"})
        stored = {k: v for k, v in store.counts_by_type(project_id="sink-only").items() if v}
    assert len(letters) == 2, (f"{len(letters)} letters read, {undecoded} undecodable; the sink counted {counted} "
                               f"dead letters from {p}.results; stored: {stored}; store: {type(store).__name__}")
    assert {letter["processor"] for letter in letters} == {"history"}
    assert {letter["source_topic"] for letter in letters} == {f"{p}.results"}
    by_payload = {letter["payload"]: letter for letter in letters}
    assert "AIOS_SCHEMA_REGISTRY_URL" in by_payload[b"\x00\x00\x00\x00\x09garbage"]["error"]
    assert "corrupt TaskResult payload" in by_payload[truncated]["error"]
    assert (REGISTRY.get_sample_value("aios_sink_native_refused_total") or 0.0) > refused_before
    # the refused batch's events and the two rejected ones at least
    assert (REGISTRY.get_sample_value("aios_sink_python_decoded_total") or 0.0) - python_before >= 3
