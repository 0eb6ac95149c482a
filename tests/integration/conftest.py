"""Fixtures for tests against the real local Kafka, Redis and chdb.

`make test` starts the stack first. A missing service fails these tests, it never skips them:
a green run must mean the real servers were exercised.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import redis
from confluent_kafka.admin import AdminClient

from aios.streams.settings import Settings, load_settings
from aios.streams.topics import create_topics, delete_topics
from tests.integration.local_servers import ClickHouseServer, LocalServer, SchemaRegistry


@pytest.fixture(scope="session")
def base_settings(session_data_dir: Path) -> Settings:
    # One role: fewer topics per test (the product default, every role, is tested on its own).
    settings = load_settings(data_dir=session_data_dir, metrics_port=0, llm="offline:echo", roles="general")
    problems = []
    try:
        AdminClient({"bootstrap.servers": settings.kafka.bootstrap}).list_topics(timeout=10)
    except Exception as exc:  # any failure means the broker is not usable
        problems.append(f"Kafka at {settings.kafka.bootstrap}: {exc}")
    try:
        redis.Redis.from_url(settings.stores.redis_url, socket_timeout=3).ping()
    except redis.RedisError as exc:
        problems.append(f"Redis at {settings.stores.redis_url}: {exc}")
    if problems:
        pytest.fail("local stack not reachable (run `make test`, or `aios dev up`):\n  " + "\n  ".join(problems))
    return settings


@pytest.fixture
def settings(base_settings: Settings) -> Iterator[Settings]:
    """Fresh topics per test: a unique prefix, created explicitly as in production."""
    s = base_settings.replace(topic_prefix=f"it{uuid.uuid4().hex[:10]}")
    create_topics(s)
    yield s
    # Thousands of leftover partitions across a run once took the local broker's heap.
    delete_topics(s)


Server = TypeVar("Server", bound=LocalServer)


def started(server: Server) -> Server:
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(f"cannot start the test {server.name}: {exc}")
    return server


@pytest.fixture(scope="session")
def clickhouse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseServer]:
    """A real ClickHouse server (the engine chdb embeds, listening on HTTP) for the server store."""
    server = ClickHouseServer(tmp_path_factory.mktemp("clickhouse-server"))
    yield started(server)
    server.stop()


@pytest.fixture(scope="session")
def schema_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SchemaRegistry]:
    """A real Confluent-API schema registry server (AxonOps, in memory), fresh for the session."""
    server = SchemaRegistry(tmp_path_factory.mktemp("schema-registry"))
    yield started(server)
    server.stop()
