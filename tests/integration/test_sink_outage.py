"""A history-store outage: the sink retries with backoff, loses nothing, commits only after storing."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from prometheus_client import REGISTRY

from aios.connectors.errors import StoreUnavailableError
from aios.connectors.history import EventRow, HistoryStore
from aios.streams.engine.runtime import Runtime
from aios.streams.kafka import EventProducer
from aios.streams.processors.history_sink import HistorySink
from aios.streams.readmodels.task_client import build_task
from aios.streams.settings import Settings
from tests.integration.helpers import wait_until

pytestmark = pytest.mark.integration


class FlakyStore(HistoryStore):
    """Fails ``failures`` inserts as an unreachable store would, then keeps every row it is given."""

    engine = "flaky"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts = 0
        self.rows: list[EventRow] = []
        self.hops: list[str] = []

    def insert_hops(self, lines: Sequence[str]) -> None:
        self.hops.extend(lines)  # who produced each record (its own table, not an event row)

    def insert(self, rows: Sequence[EventRow]) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise StoreUnavailableError(f"store down (attempt {self.attempts})")
        self.rows.extend(rows)

    def execute(self, sql: str) -> None:
        raise AssertionError("the sink only inserts")

    def insert_json(self, table: str, columns: Sequence[str], lines: Sequence[str]) -> None:
        raise AssertionError("the sink inserts through insert()")

    def insert_native(self, table: str, structure: str, blocks: bytes) -> None:
        raise AssertionError("no ingest tables: every event takes the Python path through insert()")

    def query(self, sql: str) -> list[dict[str, Any]]:
        return []

    def close(self) -> None:
        pass


def committed(settings: Settings, topic: str) -> int:
    """Offsets the sink's consumer group has committed on ``topic``, summed over partitions."""
    consumer = Consumer({"bootstrap.servers": settings.kafka.bootstrap,
                         "group.id": f"{settings.kafka.topic_prefix}-history", "enable.auto.commit": False})
    try:
        parts = [TopicPartition(topic, p) for p in range(settings.kafka.topic_partitions)]
        return sum(max(tp.offset, 0) for tp in consumer.committed(parts, timeout=10))
    finally:
        consumer.close()


def retries() -> float:
    return REGISTRY.get_sample_value("aios_sink_store_retries_total") or 0.0


async def test_sink_survives_a_store_outage_and_commits_only_after_storing(settings: Settings) -> None:
    topic = f"{settings.kafka.topic_prefix}.tasks"
    producer = EventProducer(settings)
    tasks = [build_task(f"outage {i}", project="outage") for i in range(5)]
    for task in tasks:
        producer.send(topic, "Task", task, key=task["task_id"])
    producer.flush()

    store = FlakyStore(failures=3)
    rt = Runtime(settings)
    rt.__dict__["store"] = store  # the Runtime's cached_property, filled before the sink uses it
    sink = HistorySink(rt)
    retries_before = retries()
    await sink.start()
    try:
        await wait_until(lambda: store.attempts >= 2)
        assert store.rows == []
        assert committed(settings, topic) == 0, "nothing is committed while the batch is not stored"
        await wait_until(lambda: {r.event_id for r in store.rows} == {t["event_id"] for t in tasks})
        await wait_until(lambda: committed(settings, topic) == len(tasks))
    finally:
        await sink.stop()
    assert store.attempts >= 4
    assert retries() - retries_before == 3
    assert {r.task_id for r in store.rows} == {t["task_id"] for t in tasks}


class FlakyNativeStore(HistoryStore):
    """A real chdb store whose Native inserts fail ``failures`` times first."""

    engine = "flaky-native"

    def __init__(self, real: HistoryStore, failures: int) -> None:
        self.real = real
        self.ingest = real.ingest
        self.encoder = real.encoder
        self.failures = failures
        self.attempts = 0

    def insert_native(self, table: str, structure: str, blocks: bytes) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise StoreUnavailableError(f"store down (attempt {self.attempts})")
        self.real.insert_native(table, structure, blocks)

    def execute(self, sql: str) -> None:
        self.real.execute(sql)

    def insert_json(self, table: str, columns: Sequence[str], lines: Sequence[str]) -> None:
        self.real.insert_json(table, columns, lines)

    def query(self, sql: str) -> list[dict[str, Any]]:
        return self.real.query(sql)

    def close(self) -> None:
        pass


async def test_native_inserts_survive_an_outage_too(settings: Settings, session_data_dir: Path) -> None:
    from aios.connectors.history.chdb_store import ChdbStore

    topic = f"{settings.kafka.topic_prefix}.tasks"
    project = f"outage-native-{settings.kafka.topic_prefix}"
    producer = EventProducer(settings)
    tasks = [build_task(f"native outage {i}", project=project) for i in range(5)]
    for task in tasks:
        producer.send(topic, "Task", task, key=task["task_id"])
    producer.flush()

    store = FlakyNativeStore(ChdbStore.open(session_data_dir / "chdb"), failures=3)
    assert "aios.v1.Task" in store.ingest
    rt = Runtime(settings)
    rt.__dict__["store"] = store
    sink = HistorySink(rt)
    retries_before = retries()
    await sink.start()
    try:
        await wait_until(lambda: store.attempts >= 2)
        assert store.count_events(project_id=project) == 0
        assert committed(settings, topic) == 0, "nothing is committed while the batch is not stored"
        await wait_until(lambda: store.count_events(project_id=project) == len(tasks))
        await wait_until(lambda: committed(settings, topic) == len(tasks))
    finally:
        await sink.stop()
    assert retries() - retries_before == 3
    rows = store.query(f"SELECT task_id FROM aios.tasks FINAL WHERE project_id = '{project}'")  # noqa: S608
    assert {r["task_id"] for r in rows} == {t["task_id"] for t in tasks}
