"""A real Kafka Connect worker (standalone) feeds JSON tasks in and writes JSON results out.

FileStreamSource reads tasks from a file into <prefix>.tasks-json; the json-ingress processor
turns them into Avro Tasks (or dead-letters them with the reason); the pipeline runs them; the
json-egress processor republishes results on <prefix>.results-json; FileStreamSink appends them
to a file, which the test reads. Needs infra/connect/lib (`make install` resolves it).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aios.devstack.kafka_broker import SHORT_LIVED_JVM
from aios.streams.kafka import TopicReader
from aios.streams.pipeline import running
from aios.streams.processors import PROCESSORS
from aios.streams.settings import Settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CONNECT = ROOT / "infra" / "connect"
CONFIGS = CONNECT / "connectors"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _properties(path: Path, **overrides: str) -> str:
    """A connector's .properties with some keys replaced (the shipped files name production paths)."""
    lines = []
    for line in path.read_text().splitlines():
        key = line.split("=", 1)[0]
        if key in overrides:
            line = f"{key}={overrides.pop(key)}"
        lines.append(line)
    return "\n".join(lines + [f"{k}={v}" for k, v in overrides.items()]) + "\n"


@pytest.fixture
def connect_worker(settings: Settings, tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A standalone Connect worker with the shipped FileStream configs; yields (tasks, results) files."""
    java = shutil.which("java")
    assert java, "java is missing: infra/install-system.sh installs Java 17"
    jars = list((CONNECT / "lib").glob("connect-runtime-*.jar"))
    assert jars, "infra/connect/lib has no Kafka Connect jars: run `make install`"
    p = settings.kafka.topic_prefix
    tasks, results = tmp_path / "tasks.jsonl", tmp_path / "results.jsonl"
    tasks.touch()
    worker = (CONNECT / "worker-standalone.properties").read_text()
    for key, value in {"@BOOTSTRAP@": settings.kafka.bootstrap, "@OFFSETS_FILE@": str(tmp_path / "offsets"),
                       "@REST_PORT@": str(_free_port())}.items():
        worker = worker.replace(key, value)
    (tmp_path / "worker.properties").write_text(worker)
    (tmp_path / "source.properties").write_text(_properties(
        CONFIGS / "file-source-tasks.properties", name=f"{p}-source", file=str(tasks), topic=f"{p}.tasks-json"))
    (tmp_path / "sink.properties").write_text(_properties(
        CONFIGS / "file-sink-results.properties", name=f"{p}-sink", file=str(results), topics=f"{p}.results-json"))
    log = (tmp_path / "connect.log").open("w")
    proc = subprocess.Popen(  # noqa: S603 - our own java command line
        [java, f"-Dlog4j.configuration=file:{CONNECT / 'log4j.properties'}", "-Xmx512m", *SHORT_LIVED_JVM,
         "-cp", str(CONNECT / "lib" / "*"), "org.apache.kafka.connect.cli.ConnectStandalone",
         str(tmp_path / "worker.properties"), str(tmp_path / "source.properties"), str(tmp_path / "sink.properties")],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        yield tasks, results
        assert proc.poll() is None, f"the Connect worker died:\n{(tmp_path / 'connect.log').read_text()[-3000:]}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


async def _lines(path: Path, count: int, timeout_s: float) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
        if len(lines) >= count:
            return lines
        await asyncio.sleep(0.5)
    raise AssertionError(f"{path} has fewer than {count} results after {timeout_s:.0f}s")


async def test_file_source_to_pipeline_to_file_sink(settings: Settings, connect_worker: tuple[Path, Path]) -> None:
    tasks_file, results_file = connect_worker
    wanted = {
        "connect-1": {"task_id": "connect-1", "description": "Summarise the Connect ingress", "project": "conn"},
        "connect-2": {"task_id": "connect-2", "description": "List three sink connectors", "priority": 2},
    }
    lines = [json.dumps(wanted["connect-1"]), '{"description": "typo", "rolle": "general"}',
             json.dumps(wanted["connect-2"])]
    async with running(settings, list(PROCESSORS)):
        tasks_file.write_text("\n".join(lines) + "\n")  # FileStreamSource tails the file
        results = await _lines(results_file, 2, timeout_s=150)

    by_task = {r["task_id"]: r for r in results}
    assert set(by_task) == set(wanted), f"unexpected results {sorted(by_task)}"
    for task_id, task in wanted.items():
        result = by_task[task_id]
        assert result["status"] == "succeeded"
        assert str(task["description"]) in str(result["output"])
        assert isinstance(result["timestamp"], int)  # epoch ms, not a datetime repr
    assert by_task["connect-1"]["project_id"] == "conn"

    reader = TopicReader(settings, f"{settings.kafka.topic_prefix}.dlq", from_beginning=True)
    letters = [d.value for _, d in reader.events(timeout_s=5) if not isinstance(d, Exception)]
    reader.close()
    assert len(letters) == 1
    letter = letters[0]
    assert letter["processor"] == "json-ingress"
    assert letter["source_topic"] == f"{settings.kafka.topic_prefix}.tasks-json"
    assert "unknown field(s) rolle" in letter["error"]
    assert letter["payload"] == lines[1].encode()
