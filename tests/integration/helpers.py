"""Small helpers the integration tests share."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import Callable
from typing import Any

from aios.bench.sink import TOPICS, task_events
from aios.connectors.history.base import TYPED_TABLES, HistoryStore
from aios.connectors.history.writer import Record, to_row
from aios.schemas.codec import Codec
from aios.streams.readmodels.task_client import TaskClient, build_task
from aios.streams.settings import Settings


async def wait_until(probe: Callable[[], Any], timeout_s: float = 30.0, *, every_s: float = 0.1,
                     riding_out: tuple[type[Exception], ...] = ()) -> Any:
    """Poll ``probe`` until it gives something truthy, and return that.

    It runs in a worker thread, since probes block on stores and brokers; a probe that returns a
    coroutine has it awaited here. Errors of the ``riding_out`` types count as "not yet".
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = await asyncio.to_thread(probe)
            if inspect.isawaitable(value):
                value = await value
        except riding_out:
            value = None
        if value:
            return value
        await asyncio.sleep(every_s)
    raise AssertionError(f"condition not met within {timeout_s} s")


async def submit_and_wait(settings: Settings, description: str, timeout_s: float = 30, **task: Any) -> dict[str, Any]:
    """Produce one task and return its TaskResult (the processors must be running)."""
    client = TaskClient(settings)
    try:
        client.watch_results()
        submitted = build_task(description, **task)
        client.submit(submitted)
        found = await asyncio.to_thread(client.wait, [submitted["task_id"]], timeout_s)
    finally:
        client.close()
    result = found[submitted["task_id"]].result
    result["_task"] = submitted
    return result


EVENT_FIELDS = ("event_id", "event_type", "topic", "partition", "offset", "trace_id", "task_id", "project_id",
                "role", "status")


def records(codec: Codec, project: str, tasks: int = 2) -> list[Record]:
    out = []
    for i in range(tasks):
        for name, value in task_events(i):
            value["project_id"] = project
            if name == "TaskResult" and i == 0:
                value.update(status="failed", error="boom")
            out.append(Record(f"w.{TOPICS[name]}", i, 1000 + len(out), codec.encode(name, value)))
    return out


def stored_events(store: HistoryStore, project: str) -> dict[str, dict[str, Any]]:
    rows = store.query(f"SELECT * FROM aios.events FINAL WHERE project_id = '{project}'")  # noqa: S608
    return {r["event_id"]: r for r in rows}


def assert_stored_once(store: HistoryStore, codec: Codec, batch: list[Record], project: str) -> None:
    """Each event has its ``events`` row as Python builds it, and a typed event's fields are all
    in its typed table (``events.payload`` stays empty for it: each event is stored once)."""
    got = stored_events(store, project)
    for record in batch:
        decoded = codec.decode(record.value)
        expected = to_row(decoded, record.topic, record.partition, record.offset)
        row = got[expected.event_id]
        assert {f: row[f] for f in EVENT_FIELDS} == {f: getattr(expected, f) for f in EVENT_FIELDS}
        table = TYPED_TABLES.get(expected.event_type)
        if table is None:
            assert json.loads(row["payload"]) == json.loads(expected.payload)
            continue
        assert row["payload"] == ""
        typed = store.query(f"SELECT * EXCEPT ts, toUnixTimestamp64Milli(ts) AS timestamp "  # noqa: S608
                            f"FROM aios.{table} FINAL WHERE event_id = '{expected.event_id}'")[0]
        # (a null string is '' in a String column, as errors always were)
        want = {k: "" if v is None and typed[k] == "" else v for k, v in json.loads(expected.payload).items()
                if k != "topic"}
        assert {k: typed[k] for k in decoded.value} == want
        if "topic" in typed:  # results.topic: the record's topic, on either path
            assert typed["topic"] == record.topic
