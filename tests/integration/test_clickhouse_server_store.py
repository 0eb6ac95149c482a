"""The history store on a real ClickHouse server over HTTP (clickhouse-connect), as AIOS_CLICKHOUSE_URL selects it.

The server is the ClickHouse engine chdb embeds, listening (tests/integration/local_servers.py):
the migrations, the sink's Avro inserts, the constraints on them, the stats queries and an outage
all go through the HTTP interface, as against clickhouse-server.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from click.testing import CliRunner
from prometheus_client import REGISTRY

from aios.cli import cli
from aios.connectors.errors import StoreUnavailableError
from aios.connectors.history.clickhouse_store import ClickHouseServerStore
from aios.connectors.history.migrations import migrations
from aios.connectors.history.writer import Record, write_batch
from aios.schemas.codec import Codec
from aios.streams.engine.runtime import Runtime
from aios.streams.kafka import EventProducer
from aios.streams.processors.history_sink import HistorySink
from aios.streams.readmodels.task_client import build_task
from aios.streams.settings import Settings
from tests.integration.helpers import assert_stored_once, records, stored_events, wait_until
from tests.integration.local_servers import ClickHouseServer

pytestmark = pytest.mark.integration
ALL_VERSIONS = [m.version for m in migrations(ttl_days=30)]  # every migration, each applied once


@pytest.fixture
def store(clickhouse_server: ClickHouseServer) -> ClickHouseServerStore:
    return ClickHouseServerStore(clickhouse_server.url)


def cli_env(server: ClickHouseServer) -> dict[str, str]:
    return {"AIOS_CLICKHOUSE_URL": server.url}


def test_migrations_apply_over_http_once(clickhouse_server: ClickHouseServer, store: ClickHouseServerStore) -> None:
    out = CliRunner().invoke(cli, ["db", "migrate", "--json"], env=cli_env(clickhouse_server))
    assert out.exit_code == 0, out.output
    assert json.loads(out.output.strip().splitlines()[-1]) == {
        "engine": "clickhouse-server", "applied": [], "already_applied": ALL_VERSIONS}
    versions = store.query("SELECT version FROM aios.aios_schema_migrations FINAL ORDER BY version")
    assert [int(r["version"]) for r in versions] == ALL_VERSIONS
    assert {"aios.v1.Task", "aios.v1.TaskResult", "aios.v1.LlmCall"} <= set(store.ingest)
    engine = store.query(f"SELECT engine FROM system.tables WHERE database = 'aios' "  # noqa: S608
                         f"AND name = '{store.ingest['aios.v1.Task'].table}'")
    assert engine == [{"engine": "Null"}]


def test_every_event_type_is_stored_natively_as_the_python_path_would(store: ClickHouseServerStore) -> None:
    codec = Codec(validate=False)
    project = f"srv-{uuid.uuid4().hex[:8]}"
    batch = records(codec, project, tasks=3)
    result = write_batch(store, codec, batch)
    assert (result.stored, result.native, result.rejected) == (18, 18, [])
    assert_stored_once(store, codec, batch, project)
    again = write_batch(store, codec, batch)  # a redelivery
    assert again.stored == 18 and len(stored_events(store, project)) == 18


def test_a_bad_body_is_rejected_and_the_rest_stored_on_the_server(store: ClickHouseServerStore) -> None:
    codec = Codec(validate=False)
    project = f"srv-{uuid.uuid4().hex[:8]}"
    batch = records(codec, project)
    truncated = Record(batch[0].topic, 0, 1, (batch[0].value or b"")[:-30])
    text = "x" * 8
    task = codec.decode(batch[0].value).value
    not_utf8 = Record("w.tasks", 0, 2, codec.encode("Task", {**task, "description": text}).replace(
        text.encode(), b"\xff\xfe not 8"))
    result = write_batch(store, codec, [truncated, not_utf8, *batch[1:]])
    assert sorted(str(r.value) for r, _ in result.rejected) == sorted([str(truncated.value), str(not_utf8.value)])
    assert (result.stored, result.native) == (11, 11)  # the transcoder left the two to Python
    assert_stored_once(store, codec, batch[1:], project)


def test_queries_and_inserts_from_several_threads_share_one_store(store: ClickHouseServerStore) -> None:
    # One store serves the sink's thread and the API's at once: no session may serialise them.
    codec = Codec(validate=False)
    project = f"srv-{uuid.uuid4().hex[:8]}"
    batches = [records(codec, project, tasks=2) for _ in range(4)]
    with ThreadPoolExecutor(8) as pool:
        writes = [pool.submit(write_batch, store, codec, batch) for batch in batches]
        reads = [pool.submit(store.query, "SELECT sleep(0.2) AS s") for _ in range(4)]
        assert [f.result().stored for f in writes] == [12] * 4
        assert all(f.result() == [{"s": 0}] for f in reads)
    assert len(stored_events(store, project)) == 48


def test_stats_cli_reads_the_server(clickhouse_server: ClickHouseServer, store: ClickHouseServerStore) -> None:
    codec = Codec(validate=False)
    project = f"srv-{uuid.uuid4().hex[:8]}"
    write_batch(store, codec, records(codec, project, tasks=4))  # task 0's result failed: "boom"
    out = CliRunner().invoke(cli, ["stats", "--project", project, "--json"], env=cli_env(clickhouse_server))
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output.strip().splitlines()[-1])
    assert (doc["submitted"], doc["results"], doc["succeeded"], doc["failed"]) == (4, 4, 3, 1)
    assert doc["top_failures"][0]["error"] == "boom"
    assert doc["cost"][0]["calls"] == 4


def test_an_unreachable_server_is_a_clear_error() -> None:
    with pytest.raises(StoreUnavailableError, match="AIOS_CLICKHOUSE_URL"):
        ClickHouseServerStore("http://127.0.0.1:1")


async def test_the_sink_waits_out_a_server_outage_and_loses_nothing(
        settings: Settings, clickhouse_server: ClickHouseServer) -> None:
    s = settings.replace(clickhouse_url=clickhouse_server.url, sink_flush_s=0.2)
    topic = f"{s.kafka.topic_prefix}.tasks"
    project = f"srv-{uuid.uuid4().hex[:8]}"
    producer = EventProducer(s)

    def produce(n: int, label: str) -> list[str]:
        tasks = [build_task(f"{label} {i}", project=project) for i in range(n)]
        for task in tasks:
            producer.send(topic, "Task", task, key=task["task_id"])
        producer.flush()
        return [t["event_id"] for t in tasks]

    rt = Runtime(s)
    store = rt.store
    assert isinstance(store, ClickHouseServerStore)
    retries_before = REGISTRY.get_sample_value("aios_sink_store_retries_total") or 0.0
    sink = HistorySink(rt)
    await sink.start()
    try:
        before = produce(5, "before")
        await wait_until(lambda: store.count_events(project_id=project) == 5, every_s=0.2,
                         riding_out=(StoreUnavailableError,))
        clickhouse_server.stop()  # killed: connections refused from here on
        during = produce(5, "during")
        await asyncio.sleep(2)  # the sink keeps retrying its batch, with backoff
        clickhouse_server.start()
        await wait_until(lambda: store.count_events(project_id=project) == 10, timeout_s=60, every_s=0.2,
                         riding_out=(StoreUnavailableError,))
    finally:
        await sink.stop()
    stored = {r["event_id"] for r in store.query(
        f"SELECT event_id FROM aios.tasks FINAL WHERE project_id = '{project}'")}  # noqa: S608
    assert stored == set(before) | set(during)
    assert (REGISTRY.get_sample_value("aios_sink_store_retries_total") or 0.0) > retries_before
