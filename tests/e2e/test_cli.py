"""End to end through the CLI: demo, submit/tail against `aios up`, topics, and user errors."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request

import pytest

from tests.e2e.conftest import Cli

pytestmark = pytest.mark.integration


def test_demo_runs_a_project_and_reports_where_it_went(cli: Cli) -> None:
    report = cli.json("demo", "--no-stack", timeout=180)
    assert len(report["results"]) == 5
    assert all(r["status"] == "succeeded" for r in report["results"])
    assert all(r["provider"] == "offline" for r in report["results"])
    assert "offline" in report["llm"]
    assert report["redis_turns"] == 5
    assert report["redis_key"] == f"{cli.env['AIOS_TOPIC_PREFIX']}:ctx:project:{report['project']}"
    assert report["clickhouse_engine"] == "chdb"
    by_type = report["clickhouse_rows_by_type"]
    assert {k: by_type[k] for k in ("Task", "Assignment", "MemoryEvent", "LlmCall")} == dict.fromkeys(
        ("Task", "Assignment", "MemoryEvent", "LlmCall"), 5)
    assert by_type["TaskResult"] == 15  # each task's pickup (started), its attempt and its one terminal result
    assert report["clickhouse_rows"] == sum(by_type.values())
    assert all(r["clickhouse_rows"] == 7 for r in report["results"])
    assert all(r["kafka"]["topic"].endswith(".results") and r["kafka"]["offset"] >= 0 for r in report["results"])
    # Beside it, a goal planned in sprints by the offline planner: two sprints, each reviewed, and
    # a re-plan after the first that adds a task and changes one.
    sprints = report["sprint_status"]
    assert sprints["state"] == "succeeded"
    assert [(s["id"], s["state"]) for s in sprints["sprints"]] == [("m1", "done"), ("m2", "done")]
    assert [(r["added"], r["changed"]) for r in sprints["replans"]] == [(["validate"], ["build"])]


def test_demo_human_output_says_offline_in_one_line(cli: Cli) -> None:
    out = cli.run("demo", "--no-stack", timeout=180).stdout
    assert sum("offline provider" in line for line in out.splitlines()[:2]) == 1
    assert "ClickHouse (chdb):" in out and "TaskResult 15" in out
    assert "holds 5 turns" in out
    assert "re-plan after m1: added 1 (validate); removed 0 (-); changed 1 (build)" in out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_submit_wait_and_tail_against_aios_up(cli: Cli) -> None:
    cli.run("topics", "create")
    metrics_port = _free_port()
    cli.env["AIOS_METRICS_PORT"] = str(metrics_port)
    up = cli.start("up", "--no-stack")
    try:
        deadline = time.monotonic() + 60
        assert up.stderr is not None
        while time.monotonic() < deadline:
            line = up.stderr.readline()
            if "aios: ready" in line or not line:
                break
        doc = cli.json("submit", "Write a haiku about queues", "--project", "p1", "--wait", "--timeout", "60")
        assert doc["result"]["status"] == "succeeded"
        assert doc["result"]["task_id"] == doc["task_id"]
        assert doc["topic"].endswith(".tasks")
        tail = cli.json("tail", "results", "--from-beginning", "--limit", "1", "--timeout", "10")
        assert tail["count"] == 1
        assert tail["events"][0]["type"] == "TaskResult"
        assert tail["events"][0]["event"]["task_id"] == doc["task_id"]
        # `aios trace` reads the history while `aios up` owns it (through the chdb owner's server).
        for _ in range(30):
            story = cli.json("trace", doc["task_id"])
            if any(e["topic"].endswith(".results") for e in story["events"]):
                break
            time.sleep(1)
        producers = {e["event_type"]: e["producer"].split("@")[0] for e in story["events"]}
        assert producers["Task"] == "submit" and producers["Assignment"] == "orchestrator"
        assert producers["LlmCall"] == "agents" and story["trace_ids"] == [doc["trace_id"]]
        # One /metrics for `aios up`: each process's own, labelled with the process.
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        orchestrator = 'aios_events_processed_total{{outcome="{}",process="orchestrator",processor="orchestrator"}} 1.0'
        assert orchestrator.format("dispatched") in metrics and orchestrator.format("succeeded") in metrics
        assert 'aios_events_processed_total{outcome="succeeded",process="agents",processor="agents"} 1.0' in metrics
        assert "aios_processing_seconds_bucket" in metrics
    finally:
        up.terminate()
        try:
            code = up.wait(30)
        except subprocess.TimeoutExpired:
            up.kill()
            raise
    assert code == 0, "aios up should stop cleanly on SIGTERM"


def test_topics_create_twice_is_harmless(cli: Cli) -> None:
    created = cli.json("topics", "create")
    first = created["topics"]
    second = cli.json("topics", "create")["topics"]
    assert {t["outcome"] for t in first} == {"created"}
    assert {t["outcome"] for t in second} == {"exists"}
    # It says what it chose for the cluster it found: the shared local broker is a cluster of one.
    assert (created["brokers"], created["replication"], created["min_insync_replicas"]) == (1, 1, 1)
    assert created["replication_from"] == "cluster"
    assert {(t["replication"], t["detail"]) for t in second} == {(1, "")}
    listed = cli.json("topics", "list")["topics"]
    assert len(listed) == len(first)


def test_bad_setting_is_a_clear_error(cli: Cli) -> None:
    cli.env["AIOS_TOPIC_PREFIX"] = "bad prefix!"
    proc = cli.run("topics", "list", check=False)
    assert proc.returncode == 1
    assert "AIOS_TOPIC_PREFIX" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_empty_task_is_rejected_and_nothing_is_produced(cli: Cli) -> None:
    cli.run("topics", "create")
    proc = cli.run("submit", "   ", check=False)
    assert proc.returncode == 1
    assert "description: is blank" in proc.stderr
    # The limits the API and the processors share: said before anything is produced.
    over = cli.run("submit", "hi", "--priority", "5000", check=False)
    assert over.returncode == 2 and "5000 is not in the range -1000<=x<=1000" in over.stderr
    slash = cli.run("submit", "hi", "--project", "a/b", check=False)
    assert slash.returncode == 1 and "project_id: 'a/b' is not an id" in slash.stderr
    tail = cli.json("tail", "tasks", "--from-beginning", "--timeout", "2")
    assert tail["count"] == 0


def test_tail_of_a_missing_topic_says_how_to_create_it(cli: Cli) -> None:
    proc = cli.run("tail", "results", "--timeout", "1", check=False)
    assert proc.returncode == 1
    assert "aios topics create" in proc.stderr


def test_a_goal_without_a_live_planner_says_how_to_fix_it(cli: Cli) -> None:
    cli.run("topics", "create")
    proc = cli.run("submit", "--goal", "Build a shop", "--project", "shop", check=False)
    assert proc.returncode != 0
    assert "no live agent serves 'planner'" in proc.stderr and "aios up" in proc.stderr


def test_a_goal_and_a_text_together_are_a_usage_error(cli: Cli) -> None:
    proc = cli.run("submit", "do it", "--goal", "Build a shop", check=False)
    assert proc.returncode == 2 and "one of TEXT, --plan or --goal" in proc.stderr


def test_bench_orchestrator_measures_every_dependent_task_after_a_warm_up(cli: Cli) -> None:
    doc = cli.json("bench", "orchestrator", "--tasks", "30", "--width", "10", timeout=300)
    assert doc["dag"] == {"tasks": 30, "width": 10, "depth": 3, "edges_per_task": 2}
    assert doc["warmup"] == {"project": "bench-warmup", "tasks": 30, "measured": False}
    assert doc["overhead_ms"]["count"] == doc["visible_overhead_ms"]["count"] == 20  # layers 1 and 2
    assert 0 <= doc["overhead_ms"]["p50"] <= doc["overhead_ms"]["p99"] <= doc["overhead_ms"]["max"]
    assert doc["raw_kafka_hop_ms"]["p50"] > 0 and doc["tasks_per_s"] > 0


def test_bench_orchestrator_refuses_a_dag_of_one_layer(cli: Cli) -> None:
    proc = cli.run("bench", "orchestrator", "--tasks", "10", "--width", "10", check=False)
    assert proc.returncode == 2 and "at least two layers" in proc.stderr


def test_bench_sink_stores_every_event_natively_and_times_the_raw_insert_of_the_same_rows(cli: Cli) -> None:
    doc = cli.json("bench", "sink", "--rows", "600", "--batch", "250", "--stats-rows", "2000", timeout=300)
    assert (doc["rows"], doc["batch"]) == (600, 250)
    sink, raw = doc["sink"], doc["raw_insert"]
    assert sink["stored"] == sink["native"] == raw["stored"] == 600
    assert all(run["seconds"] > 0 and run["cpu_seconds"] > 0 and run["rows_per_s"] > 0 for run in (sink, raw))
    # (from the unrounded rates: the rounded ones differ in the third digit)
    assert doc["ratio_sink_over_raw"] == pytest.approx(sink["rows_per_s"] / raw["rows_per_s"], rel=0.01, abs=0.002)
    assert doc["stats"]["rows_per_table"] == doc["stats"]["results_seen"] == 2000


def test_bench_sink_refuses_an_empty_run(cli: Cli) -> None:
    proc = cli.run("bench", "sink", "--rows", "0", check=False)
    assert proc.returncode == 2 and "must be ≥ 1" in proc.stderr
