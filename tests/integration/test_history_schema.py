"""The ClickHouse schema on chdb: migrations, typed tables, rollups, and `aios stats` over them."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from aios.bench.sink import task_events
from aios.cli import cli
from aios.connectors.history.chdb_store import ChdbStore
from aios.connectors.history.migrations import migrations
from aios.connectors.history.queries import stats
from aios.connectors.history.writer import Record, write_batch
from aios.schemas.codec import Codec
from aios.streams.processors.history_sink import to_row

pytestmark = pytest.mark.integration
ALL_VERSIONS = [m.version for m in migrations(ttl_days=30)]  # every migration, each applied once

TYPED = ("tasks", "assignments", "results", "messages", "memory", "llm_calls", "agent_status", "dead_letters")
ROLLUPS = ("task_states_1m", "latency_1m", "llm_usage_1m", "failures_1m")


def topic_of(record: str) -> str:
    # A committed TaskResult is on the results topic; the others' topics do not matter to stats.
    return "t.results" if record == "TaskResult" else f"t.{record}"


@pytest.fixture
def store(session_data_dir: Path) -> ChdbStore:
    return ChdbStore.open(session_data_dir / "chdb")  # the one chdb directory of this process


def test_migrations_are_recorded_once_and_create_every_table(store: ChdbStore) -> None:
    report = store.migrate()
    assert report.applied == [] and report.already_applied == ALL_VERSIONS
    versions = store.query("SELECT version FROM aios.aios_schema_migrations FINAL ORDER BY version")
    assert [int(r["version"]) for r in versions] == ALL_VERSIONS
    tables = {r["name"]: r for r in store.query(
        "SELECT name, engine, create_table_query FROM system.tables WHERE database = 'aios'")}
    for name in TYPED:
        assert tables[name]["engine"] == "ReplacingMergeTree"
        assert "toYYYYMM(ts)" in tables[name]["create_table_query"]
        assert "toIntervalDay(90)" in tables[name]["create_table_query"]
    for name in ROLLUPS:
        assert tables[name]["engine"] == "AggregatingMergeTree"
    rollup_views = [n for n, r in tables.items() if r["engine"] == "MaterializedView" and not n.startswith("ingest_")]
    assert len(rollup_views) == 7
    # The sink's ingest objects (ingest.py): one Null table shared by the mappable record
    # types, a view into events and one into each of their typed tables.
    ingest = [n for n, r in tables.items() if n.startswith("ingest_") and r["engine"] == "Null"]
    assert len(ingest) == 1 and f"{ingest[0]}_events" in tables
    assert {f"{ingest[0]}_{t}" for t in ("tasks", "assignments", "results", "messages", "memory", "llm_calls",
                                          "agent_status")} <= set(tables)
    assert f"{ingest[0]}_dead_letters" not in tables  # DeadLetter has bytes: decoded in Python


def test_a_redelivered_batch_lands_once_in_typed_tables_rollups_and_stats(store: ChdbStore) -> None:
    codec = Codec(validate=False)
    events = task_events(0)
    project = f"schema-{uuid.uuid4().hex[:8]}"
    for _, value in events:
        if "project_id" in value:
            value["project_id"] = project
    events[2][1]["status"] = "failed"
    events[2][1]["error"] = "provider timed out"
    rows = [to_row(codec.decode(codec.encode(name, value)), topic_of(name), 0, i)
            for i, (name, value) in enumerate(events)]
    store.insert(rows)
    store.insert(rows)  # a redelivery (sink retry or replay): same event ids

    for table in ("tasks", "assignments", "results", "messages", "memory", "llm_calls"):
        n = store.query(f"SELECT count() AS n FROM aios.{table} FINAL WHERE project_id = '{project}'")  # noqa: S608
        assert int(n[0]["n"]) == 1, table
    result = store.query(f"SELECT status, error, submitted_at, ts FROM aios.results WHERE project_id = '{project}'")  # noqa: S608
    assert result[0]["status"] == "failed" and result[0]["error"] == "provider timed out"
    assert int(result[0]["submitted_at"]) == events[1][1]["submitted_at"]

    states = {r["state"]: int(r["n"]) for r in store.query(
        "SELECT state, uniqExactMerge(events) AS n FROM aios.task_states_1m "  # noqa: S608
        f"WHERE project_id = '{project}' GROUP BY state")}
    assert states == {"submitted": 1, "assigned": 1, "failed": 1}
    usage = store.query(f"SELECT uniqExactMerge(calls) AS calls FROM aios.llm_usage_1m WHERE project_id = '{project}'")  # noqa: S608
    assert int(usage[0]["calls"]) == 1

    got = stats(store, since_s=3600, project_id=project)
    assert (got.submitted, got.results, got.failed, got.success_rate) == (1, 1, 1, 0.0)
    assert got.latency_ms["p50"] is not None
    assert got.cost == [{"provider": "offline", "model": "echo", "calls": 1, "input_tokens": 42,
                         "output_tokens": 17, "cost_usd": 0.0}]
    assert got.top_failures == [{"error": "provider timed out", "count": 1, "role": "general"}]
    assert got.roles == [{"role": "general", "assigned": 1, "results": 1, "failed": 1,
                          "p50_ms": got.latency_ms["p50"]}]

    env = {"AIOS_DATA_DIR": str(store.path.parent), "AIOS_CLICKHOUSE_URL": ""}
    out = CliRunner().invoke(cli, ["stats", "--project", project, "--since", "1h", "--json"], env=env)
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output.strip().splitlines()[-1])
    assert doc["results"] == 1 and doc["top_failures"][0]["error"] == "provider timed out"
    human = CliRunner().invoke(cli, ["stats", "--project", project], env=env)
    assert human.exit_code == 0 and "provider timed out" in human.output


def test_db_migrate_cli_and_a_bad_since(store: ChdbStore) -> None:
    env = {"AIOS_DATA_DIR": str(store.path.parent), "AIOS_CLICKHOUSE_URL": ""}
    out = CliRunner().invoke(cli, ["db", "migrate", "--json"], env=env)
    assert out.exit_code == 0, out.output
    assert json.loads(out.output.strip().splitlines()[-1]) == {
        "engine": "chdb", "applied": [], "already_applied": ALL_VERSIONS}
    bad = CliRunner().invoke(cli, ["stats", "--since", "yesterday"], env=env)
    assert bad.exit_code == 2 and "30m, 1h, 7d" in bad.output


def test_stats_summary_and_roles_come_from_one_pass_and_agree(store: ChdbStore) -> None:
    codec = Codec(validate=False)
    project = f"schema-{uuid.uuid4().hex[:8]}"
    rows = []
    for i, (role, status, latency) in enumerate([("backend", "succeeded", 100.0), ("backend", "failed", 300.0),
                                                 ("qa", "succeeded", 50.0)]):
        for name, value in task_events(i):
            if "project_id" in value:
                value["project_id"] = project
            if "role" in value:
                value["role"] = role
            if name == "TaskResult":
                value.update(status=status, error="boom" if status == "failed" else None, submitted_at=0,
                             latency_ms=latency)
            rows.append(to_row(codec.decode(codec.encode(name, value)), topic_of(name), 0, len(rows)))
    store.insert(rows)

    got = stats(store, since_s=3600, project_id=project)
    assert (got.submitted, got.results, got.succeeded, got.failed) == (3, 3, 2, 1)
    # the same figures as queries of their own (the all-roles row merges the per-role digests)
    direct = {str(r["role"]): float(r["p50"]) for r in store.query(
        f"SELECT role, quantileTDigest(0.5)(latency_ms) AS p50 FROM aios.results FINAL "  # noqa: S608
        f"WHERE project_id = '{project}' GROUP BY role")}
    direct[""] = float(store.query(f"SELECT quantileTDigest(0.5)(latency_ms) AS p50 FROM aios.results FINAL "  # noqa: S608
                                   f"WHERE project_id = '{project}'")[0]["p50"])
    assert got.latency_ms["p50"] == direct[""]
    assert got.roles == [{"role": "backend", "assigned": 2, "results": 2, "failed": 1, "p50_ms": direct["backend"]},
                         {"role": "qa", "assigned": 1, "results": 1, "failed": 0, "p50_ms": 50.0}]
    assert direct["qa"] == 50.0
    assert got.top_failures == [{"error": "boom", "count": 1, "role": "backend"}]

    empty = stats(store, since_s=3600, project_id=f"{project}-none")
    assert (empty.results, empty.success_rate, empty.roles, empty.cost) == (0, None, [], [])
    assert empty.latency_ms == {"p50": None, "p95": None, "p99": None}


def result_and_pickup(project: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A task's TaskResult, and an agent's pickup of it (status ``started``, another event)."""
    (_, result), = [(n, v) for n, v in task_events(0) if n == "TaskResult"]
    result["project_id"] = project
    return result, {**result, "event_id": uuid.uuid4().hex, "status": "started", "output": "", "latency_ms": 0.0}


def test_a_pickup_is_not_a_result_in_stats_or_the_latency_rollup(store: ChdbStore) -> None:
    codec = Codec(validate=False)
    project = f"pickup-{uuid.uuid4().hex[:8]}"
    result, pickup = result_and_pickup(project)
    rows = [to_row(codec.decode(codec.encode("TaskResult", v)), topic, 0, i)
            for i, (v, topic) in enumerate(((pickup, "t.attempts"), (result, "t.results")))]
    store.insert(rows)
    got = stats(store, since_s=3600, project_id=project)
    assert (got.results, got.succeeded, got.success_rate) == (1, 1, 1.0)
    rolled = store.query("SELECT uniqExactMerge(results) AS n FROM aios.latency_1m "  # noqa: S608
                         f"WHERE project_id = '{project}'")
    assert int(rolled[0]["n"]) == 1


@pytest.mark.parametrize("path", ["python", "native"])
def test_attempts_are_not_results_each_task_counts_once(store: ChdbStore, path: str) -> None:
    # One task: picked up, failed, picked up again, answered (all on attempts), then the
    # orchestrator's final (a new event) committed on results. Stats see one result, succeeded,
    # through either of the sink's paths (Python's JSON rows, the transcoder's Native blocks).
    codec = Codec(validate=False)
    project = f"attempts-{uuid.uuid4().hex[:8]}"
    (_, final), = [(n, v) for n, v in task_events(0) if n == "TaskResult"]
    final["project_id"] = project

    def attempt(n: int, status: str, **more: object) -> dict[str, object]:
        return {**final, "event_id": uuid.uuid4().hex, "attempt": n, "status": status, **more}

    attempts = [attempt(1, "started", output="", latency_ms=0.0),
                attempt(1, "failed", output="", error="provider timed out"),
                attempt(2, "started", output="", latency_ms=0.0), attempt(2, "succeeded")]
    records = [Record("aios.attempts", 0, i, codec.encode("TaskResult", v)) for i, v in enumerate(attempts)]
    records.append(Record("aios.results", 0, 0, codec.encode("TaskResult", {**final, "attempt": 2})))
    if path == "native":
        assert store.encoder is not None, "the transcoder is installed (make install)"
        assert write_batch(store, codec, records).native == len(records)
    else:
        store.insert([to_row(codec.decode(r.value), r.topic, r.partition, r.offset) for r in records])
    got = stats(store, since_s=3600, project_id=project)
    assert (got.results, got.succeeded, got.failed, got.success_rate) == (1, 1, 0, 1.0)
    assert got.top_failures == []
    assert [(r["role"], r["results"], r["failed"]) for r in got.roles] == [("general", 1, 0)]
    topics = store.query(f"SELECT topic, count() AS n FROM aios.results FINAL "  # noqa: S608
                         f"WHERE project_id = '{project}' GROUP BY topic ORDER BY topic")
    assert [(r["topic"], int(r["n"])) for r in topics] == [("aios.attempts", 4), ("aios.results", 1)]
    rolled = store.query("SELECT uniqExactMerge(results) AS n FROM aios.latency_1m "  # noqa: S608
                         f"WHERE project_id = '{project}'")
    failures = store.query("SELECT uniqExactMerge(failures) AS n FROM aios.failures_1m "  # noqa: S608
                           f"WHERE project_id = '{project}'")
    assert (int(rolled[0]["n"]), int(failures[0]["n"]) if failures else 0) == (1, 0)


def test_results_stored_before_the_topic_column_count_as_they_did(store: ChdbStore) -> None:
    # A row from before migration 13 has topic '': a result unless it is a pickup, as then.
    codec = Codec(validate=False)
    project = f"old-{uuid.uuid4().hex[:8]}"
    result, pickup = result_and_pickup(project)
    columns = [c for c in store.stored_columns("results") if c not in ("topic", "ts")] + ["timestamp"]
    store.insert_json("results", columns, [to_row(codec.decode(codec.encode("TaskResult", v)), "", 0, 0).payload
                                           for v in (pickup, result)])
    stored = store.query(f"SELECT topic FROM aios.results WHERE project_id = '{project}'")  # noqa: S608
    assert [r["topic"] for r in stored] == ["", ""]
    got = stats(store, since_s=3600, project_id=project)
    assert (got.results, got.succeeded) == (1, 1)


@pytest.mark.parametrize("args", [["stats"], ["trace", "some-task"]])
def test_reading_a_history_that_is_not_there_says_where_it_looked(tmp_path: Path, args: list[str]) -> None:
    # AIOS_DATA_DIR is relative to the current directory: run elsewhere than `aios up`, a read
    # command would have made a new, empty store there and answered with zeros.
    env = {"AIOS_DATA_DIR": str(tmp_path / "elsewhere"), "AIOS_CLICKHOUSE_URL": ""}
    out = CliRunner().invoke(cli, args, env=env)
    assert out.exit_code == 1
    assert f"no history at {tmp_path / 'elsewhere' / 'chdb'}" in out.output and "AIOS_DATA_DIR" in out.output
    assert not (tmp_path / "elsewhere").exists()
