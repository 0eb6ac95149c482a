"""The dev stack for real: a KRaft broker and a Redis server on free ports under a temporary data dir."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from confluent_kafka.admin import AdminClient

from aios import devstack
from aios.streams.errors import StackError
from aios.streams.settings import Settings, load_settings

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers kill(0); its cmdline is empty.
    return not Path(f"/proc/{pid}/cmdline").read_bytes()


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    stack = load_settings(
        data_dir=tmp_path / "data",
        kafka_bootstrap=f"127.0.0.1:{_free_port()}",
        kafka_controller_port=_free_port(),
        redis_url=f"redis://127.0.0.1:{_free_port()}/0",
    )
    yield stack
    devstack.down(stack, timeout_s=10)  # never leave a broker behind, even when an assertion fails


def test_up_status_idempotent_up_down(settings: Settings, tmp_path: Path) -> None:
    first = devstack.up(settings)
    assert [(s.name, s.state, s.action) for s in first.services] == [
        ("kafka", "running", "started"),
        ("redis", "running", "started"),
    ]
    kafka_pid, redis_pid = (s.pid for s in first.services)
    assert kafka_pid and redis_pid

    # The services really answer.
    metadata = AdminClient({"bootstrap.servers": settings.kafka.bootstrap}).list_topics(timeout=10)
    assert list(metadata.brokers) == [1]
    client = redis.Redis.from_url(settings.stores.redis_url)
    assert client.ping()
    client.close()
    assert (settings.stores.data_dir / "kafka" / "data" / "meta.properties").exists()

    assert [(s.state, s.pid) for s in devstack.status(settings).services] == [
        ("running", kafka_pid),
        ("running", redis_pid),
    ]

    again = devstack.up(settings)  # nothing new is started
    assert [(s.state, s.pid, s.action) for s in again.services] == [
        ("running", kafka_pid, "kept"),
        ("running", redis_pid, "kept"),
    ]

    # Another data dir pointed at the same ports sees them as external, and its down leaves them alone.
    other = load_settings(
        data_dir=tmp_path / "other",
        kafka_bootstrap=settings.kafka.bootstrap,
        kafka_controller_port=settings.kafka.controller_port,
        redis_url=settings.stores.redis_url,
    )
    assert [(s.state, s.pid) for s in devstack.up(other).services] == [("external", None), ("external", None)]
    devstack.down(other)
    assert [s.state for s in devstack.status(settings).services] == ["running", "running"]

    stopped = devstack.down(settings)
    assert [(s.state, s.action) for s in stopped.services] == [("stopped", "stopped"), ("stopped", "stopped")]
    assert _gone(kafka_pid) and _gone(redis_pid)
    assert [s.state for s in devstack.status(settings).services] == ["stopped", "stopped"]
    assert not (settings.stores.data_dir / "kafka" / "kafka.pid").exists()

    harmless = devstack.down(settings)
    assert [(s.state, s.action) for s in harmless.services] == [("stopped", "none"), ("stopped", "none")]

    # A warm restart reuses the formatted storage (no second format) and comes back up.
    cluster = (settings.stores.data_dir / "kafka" / "data" / "meta.properties").read_text()
    restarted = devstack.up(settings)
    assert [s.state for s in restarted.services] == ["running", "running"]
    assert (settings.stores.data_dir / "kafka" / "data" / "meta.properties").read_text() == cluster


def test_kafka_that_dies_while_starting_reports_its_log(settings: Settings) -> None:
    # Storage formatted for another cluster id makes the broker exit at startup.
    data = settings.stores.data_dir / "kafka" / "data"
    data.mkdir(parents=True)
    (data / "meta.properties").write_text("version=1\ncluster.id=AAAAAAAAAAAAAAAAAAAAAA\nnode.id=7\n")
    with pytest.raises(StackError, match=r"Kafka exited while starting; last lines of .*kafka.log"):
        devstack.up(settings, kafka_timeout_s=60)
