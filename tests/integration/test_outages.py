"""Failures that are not the record's fault are waited out, never dead-lettered: a schema registry
that cannot be reached, Redis down, ClickHouse down. Each outage is of a real server the test starts
(the shared Kafka and Redis are never touched), and every record is processed once it is back.

Before: a registry connection failure made valid records undecodable, so they went to the DLQ.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client import REGISTRY

from aios.schemas.codec import Codec, ConfluentRegistry
from aios.streams.kafka import EventProducer, TopicReader
from aios.streams.pipeline import running
from aios.streams.processors import PROCESSORS
from aios.streams.readmodels.task_client import TaskClient, build_task
from aios.streams.settings import Settings
from aios.streams.topics import Topics
from tests.integration.conftest import started
from tests.integration.helpers import submit_and_wait, wait_until
from tests.integration.local_servers import ClickHouseServer, RedisServer, SchemaRegistry, TcpProxy
from tests.unit.schemas import load_raw
from tests.unit.schemas.test_codec import catalog_with_current

pytestmark = pytest.mark.integration
OUTAGE_S = 8.0  # long enough for several retries of every processor


def retries(processor: str, error_type: str) -> float:
    labels = {"processor": processor, "verdict": "retry", "error_type": error_type}
    return REGISTRY.get_sample_value("aios_record_failures_total", labels) or 0.0


def dead_letters(settings: Settings) -> list[dict[str, Any]]:
    reader = TopicReader(settings, Topics.from_settings(settings).dlq, from_beginning=True)
    try:
        return [d.value for _, d in reader.events(timeout_s=2) if not isinstance(d, Exception)]
    finally:
        reader.close()


async def results_for(settings: Settings, task_ids: set[str], timeout_s: float = 90) -> dict[str, dict[str, Any]]:
    def found() -> dict[str, dict[str, Any]] | None:
        reader = TopicReader(settings, Topics.from_settings(settings).results, from_beginning=True)
        try:
            got = {d.value["task_id"]: d.value for _, d in reader.events(timeout_s=1)
                   if not isinstance(d, Exception) and d.value["task_id"] in task_ids}
        finally:
            reader.close()
        return got if set(got) == task_ids else None
    result: dict[str, dict[str, Any]] = await wait_until(found, timeout_s, every_s=1)
    return result


@pytest.fixture
def registry_proxy(schema_registry: SchemaRegistry) -> Iterator[TcpProxy]:
    proxy = TcpProxy(schema_registry.port)
    proxy.up()
    yield proxy
    proxy.down()


async def test_an_unreachable_registry_is_waited_out_and_nothing_is_dead_lettered(
        settings: Settings, registry_proxy: TcpProxy) -> None:
    s = settings.replace(schema_registry_url=registry_proxy.url)
    p = s.kafka.topic_prefix
    async with running(s, list(PROCESSORS)) as live:
        assert (await submit_and_wait(s, "before the outage", timeout_s=60))["status"] == "succeeded"
        # A Task of a newer schema version: its id is new to every processor, so reading it needs the
        # registry. Registered while the registry is up; produced while it is down.
        evolved = load_raw("Task")
        evolved["fields"] = [*evolved["fields"], {"name": "labels", "type": {"type": "array", "items": "string"},
                                                  "default": []}]
        newer = Codec(catalog_with_current(evolved), registry=ConfluentRegistry(registry_proxy.url))
        framed = build_task("a newer writer during the outage", project="outage")
        data = newer.encode("Task", {**framed, "labels": ["x"]}, topic=f"{p}.tasks")
        before = {n: retries(n, "RegistryUnavailableError") for n in ("orchestrator", "json-ingress")}

        registry_proxy.down()
        producer = EventProducer(s)
        producer.send_raw(f"{p}.tasks", data, key="outage")
        # The JSON ingress has not encoded a Task yet: it must register the schema, which it cannot.
        producer.send_raw(f"{p}.tasks-json", json.dumps({"description": "json during the outage",
                                                          "task_id": "json-1", "project": "outage"}).encode())
        producer.flush()
        await asyncio.sleep(OUTAGE_S)
        live.check()
        assert retries("orchestrator", "RegistryUnavailableError") > before["orchestrator"]
        assert retries("json-ingress", "RegistryUnavailableError") > before["json-ingress"]
        assert dead_letters(s) == []

        registry_proxy.up()
        results = await results_for(s, {framed["task_id"], "json-1"})
        assert {r["status"] for r in results.values()} == {"succeeded"}
        live.check()
    assert dead_letters(s) == [], "valid records are never dead-lettered for the registry's sake"


async def test_redis_down_makes_agents_and_memory_wait_not_dead_letter(settings: Settings, tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        s = settings.replace(redis_url=server.url)
        async with running(s, ["orchestrator", "results", "agents", "memory"]) as live:
            assert (await submit_and_wait(s, "before the outage", timeout_s=60))["status"] == "succeeded"
            before = retries("agents", "StoreUnavailableError")
            server.stop()
            client = TaskClient(s)
            try:
                during = build_task("submitted while Redis is down", project="redis-outage")
                client.submit(during)
            finally:
                client.close()
            await asyncio.sleep(OUTAGE_S)
            live.check()
            assert retries("agents", "StoreUnavailableError") > before, "the agent waits for Redis"
            assert dead_letters(s) == []

            server.start()  # the same port, empty: Redis is a cache of the log
            [result] = (await results_for(s, {during["task_id"]})).values()
            assert result["status"] == "succeeded"
            turns = redis.Redis.from_url(server.url)

            def remembered() -> bool:
                keys = turns.keys(f"{s.kafka.topic_prefix}:*redis-outage*")
                return any(during["task_id"].encode() in b"".join(turns.lrange(k, 0, -1)) for k in keys
                           if turns.type(k) == b"list")
            await wait_until(remembered, 30)  # the memory processor applied the turn once Redis was back
            live.check()
        assert dead_letters(s) == []
    finally:
        server.stop()


async def test_clickhouse_down_holds_the_history_sink_back_and_loses_nothing(settings: Settings,
                                                                            tmp_path: Path) -> None:
    server = started(ClickHouseServer(tmp_path / "clickhouse"))
    try:
        s = settings.replace(clickhouse_url=server.url)
        topic = Topics.from_settings(s).tasks
        producer = EventProducer(s)

        def produce(n: int, tag: str) -> list[str]:
            tasks = [build_task(f"{tag} {i}", project="ch-outage") for i in range(n)]
            for task in tasks:
                producer.send(topic, "Task", task, key="ch-outage")
            producer.flush()
            return [t["event_id"] for t in tasks]

        async with running(s, ["history"]) as live:
            store = live.runtime.store

            def stored(ids: list[str]) -> bool:
                quoted = ", ".join(f"'{i}'" for i in ids)
                rows = store.query(f"SELECT count() AS n FROM aios.events FINAL WHERE event_id IN ({quoted})")  # noqa: S608
                return int(rows[0]["n"]) == len(ids)

            first = produce(3, "before")
            await wait_until(lambda: stored(first), 60)
            before = REGISTRY.get_sample_value("aios_sink_store_retries_total") or 0.0
            server.stop()
            later = produce(3, "during")
            await asyncio.sleep(OUTAGE_S)
            # Held back, and retrying: on a loaded machine the first failed insert can come later.
            await wait_until(lambda: (REGISTRY.get_sample_value("aios_sink_store_retries_total") or 0.0) > before, 90)
            live.check()
            server.start()
            await wait_until(lambda: stored(first + later), 90, riding_out=(Exception,))
            live.check()
        assert dead_letters(s) == []
    finally:
        server.stop()
