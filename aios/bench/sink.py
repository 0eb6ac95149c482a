"""``aios bench sink``: history-sink rows/s into chdb beside a raw bulk insert, and ``aios stats`` latency.

Both insert runs happen in one process against one fresh chdb data directory. The sink run takes
encoded events through the sink's own code path (``connectors.history.writer.write_batch`` per
batch: the Rust transcoder's Native blocks into ``events`` and the typed tables through the ingest views). The raw
run inserts the same stored rows again, exported beforehand in ClickHouse's own columnar Native
format, with one INSERT per table: no parsing and no Python per row, the fastest bulk insert we
found. The stats run fills the typed tables with synthetic rows through
``INSERT … SELECT FROM numbers()`` and times the queries ``aios stats`` runs.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aios.bench.toolkit import Clock
from aios.connectors.history.base import TYPED_TABLES, HistoryStore
from aios.connectors.history.chdb_store import ChdbStore
from aios.connectors.history.queries import stats
from aios.connectors.history.synthetic import SYNTHETIC_TABLES, fill_synthetic
from aios.connectors.history.writer import Record, write_batch
from aios.schemas.codec import Codec
from aios.schemas.events import envelope, new_id

TOPICS = {"Task": "tasks", "Assignment": "agent.general", "TaskResult": "results",
          "AgentMessage": "messages", "MemoryEvent": "memory", "LlmCall": "llm-calls"}


def task_events(i: int) -> list[tuple[str, dict[str, Any]]]:
    """The six events one task produces in the pipeline, shaped as the processors build them."""
    env = envelope()
    task_id, project, role, trace = new_id(), f"bench-{i % 5}", "general", env["trace_id"]
    at = env["timestamp"]
    common = {"task_id": task_id, "project_id": project}
    text = f"bench task {i}: summarise the release notes in three bullet points"
    return [
        ("Task", {**env, **common, "role": role, "description": text, "priority": 0, "depends_on": [],
                  "privacy": "normal", "submitted_by": "bench", "metadata": {}}),
        ("Assignment", {**envelope(trace), **common, "role": role, "description": text, "attempt": 1,
                        "priority": 0, "privacy": "normal", "context": {}, "submitted_at": at}),
        ("TaskResult", {**envelope(trace), **common, "role": role, "attempt": 1, "status": "succeeded",
                        "output": "[offline:echo] " + text, "error": None, "agent_id": "bench-agent",
                        "provider": "offline", "model": "echo", "input_tokens": 42, "output_tokens": 17,
                        "cost_usd": 0.0, "latency_ms": 1.5, "submitted_at": at}),
        ("AgentMessage", {**envelope(trace), **common, "message_id": new_id(), "sender": "bench-agent",
                          "recipient": None, "kind": "result", "content": "done"}),
        ("MemoryEvent", {**envelope(trace), "memory_id": new_id(), "scope": "project", "scope_id": project,
                         "project_id": project, "kind": "turn", "speaker": "bench-agent",
                         "content": "[offline:echo] " + text, "task_id": task_id, "tokens": 17}),
        ("LlmCall", {**envelope(trace), **common, "call_id": new_id(), "agent_id": "bench-agent", "attempt": 1,
                     "step": 0, "provider": "offline", "model": "echo", "strategy": "single",
                     "input_tokens": 42, "output_tokens": 17, "cost_usd": 0.0, "latency_ms": 0.05,
                     "ttft_ms": None, "outcome": "ok", "error": None, "fallback_chain": []}),
    ]


def encoded_events(codec: Codec, rows: int) -> list[Record]:
    out: list[Record] = []
    i = 0
    while len(out) < rows:
        for name, value in task_events(i):
            out.append(Record(f"bench.{TOPICS[name]}", i % 3, len(out), codec.encode(name, value)))
        i += 1
    return out[:rows]


def sink_run(store: HistoryStore, codec: Codec, encoded: list[Record], batch: int,
             tick: Callable[[int], None]) -> tuple[float, float, int]:
    """``write_batch`` per batch, as HistorySink.apply runs it (without Kafka).

    Returns the wall and CPU seconds taken and the events stored as Native blocks.
    """
    native = 0
    clock = Clock()
    for at in range(0, len(encoded), batch):
        result = write_batch(store, codec, encoded[at:at + batch])
        if result.rejected:
            raise AssertionError(f"the bench's own events were rejected: {result.rejected[0][1]}")
        native += result.native
        tick(result.stored)
    return *clock.read(), native


def export_native(store: HistoryStore, directory: Path) -> dict[str, tuple[Path, str]]:
    """The stored rows of ``events`` and each non-empty typed table as Native files, for the raw run."""
    out: dict[str, tuple[Path, str]] = {}
    for table in ("events", *TYPED_TABLES.values()):
        path = directory / f"{table}.native"
        columns = store.export_native(table, path)
        if columns is not None:
            out[table] = (path, columns)
    return out


def raw_run(store: HistoryStore, files: dict[str, tuple[Path, str]]) -> tuple[float, float]:
    """The same rows, columnar and ready, in one INSERT per table (rollup views fire as for the sink).

    Returns the wall and CPU seconds taken.
    """
    clock = Clock()
    for table, (path, columns) in files.items():
        store.import_native(table, columns, path)
    return clock.read()


def stats_run(store: HistoryStore, rows: int, repeats: int = 5) -> dict[str, Any]:
    store.truncate_all()
    started = time.perf_counter()
    fill_synthetic(store, rows)
    fill_s = time.perf_counter() - started
    timings: dict[str, list[float]] = {"all projects": [], "one project": []}
    doc: dict[str, Any] = {}
    for _ in range(repeats):
        for label, project in (("all projects", None), ("one project", "p1")):
            t0 = time.perf_counter()
            result = stats(store, since_s=3600, project_id=project)
            timings[label].append((time.perf_counter() - t0) * 1000)
            doc[label] = result
    return {
        "rows_per_table": rows,
        "tables": list(SYNTHETIC_TABLES),
        "fill_s": round(fill_s, 2),
        "query_ms": {label: {"median": round(statistics.median(v), 1), "max": round(max(v), 1)}
                     for label, v in timings.items()},
        "results_seen": doc["all projects"].results,
    }


def bench_sink(*, rows: int, stats_rows: int, batch: int, data_dir: Path | None = None,
               tick: Callable[[int], None] = lambda n: None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="aios-bench-sink-") as tmp:
        store = ChdbStore.open((data_dir or Path(tmp)) / "chdb")
        store.truncate_all()
        codec = Codec(validate=False)
        encoded = encoded_events(codec, rows)
        sink_s, sink_cpu, native = sink_run(store, codec, encoded, batch, tick)
        stored = store.count_events()
        files = export_native(store, Path(tmp))
        store.truncate_all()
        raw_s, raw_cpu = raw_run(store, files)
        raw_stored = store.count_events()
        stats_doc = stats_run(store, stats_rows)
        store.truncate_all()
    sink_rate, raw_rate = rows / sink_s, rows / raw_s
    return {
        "engine": store.engine,
        "cpus": os.cpu_count(),
        "rows": rows,
        "batch": batch,
        "sink": {"seconds": round(sink_s, 3), "cpu_seconds": round(sink_cpu, 3), "rows_per_s": round(sink_rate),
                 "stored": stored,
                 "native": native},
        "raw_insert": {"seconds": round(raw_s, 3), "cpu_seconds": round(raw_cpu, 3), "rows_per_s": round(raw_rate),
                       "stored": raw_stored,
                       "method": "Native files, one INSERT per table"},
        "ratio_sink_over_raw": round(sink_rate / raw_rate, 3),
        "stats": stats_doc,
        "targets": {"sink_rows_per_s": 100_000, "sink_over_raw": 0.5, "stats_ms": 200},
    }
