"""The dev stack for real: a KRaft broker and a Redis server on free ports under a temporary data dir."""

from __future__ import annotations

import os
import socket
import time
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


def _consecutive_free_ports(count: int) -> int:
    """The first of ``count`` consecutive free ports (the cluster's controllers take them in order)."""
    for _ in range(200):
        first = _free_port()
        socks = []
        try:
            for port in range(first, first + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise AssertionError(f"no {count} consecutive free ports found")


def test_dev_up_brokers_3_starts_a_cluster_that_topics_replicate_over(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from click.testing import CliRunner

    from aios.cli import cli as main
    from aios.streams.topics import delete_topics
    from tests.integration.kafka_brokers import listed_topics

    bootstrap = ",".join(f"127.0.0.1:{_free_port()}" for _ in range(3))
    env = {"AIOS_DATA_DIR": str(tmp_path / "data"), "AIOS_KAFKA_BOOTSTRAP": bootstrap,
           "AIOS_KAFKA_CONTROLLER_PORT": str(_consecutive_free_ports(3)), "AIOS_KAFKA_HEAP_MB": "320",
           "AIOS_REDIS_URL": f"redis://127.0.0.1:{_free_port()}/0", "AIOS_TOPIC_PREFIX": "itcluster"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    runner = CliRunner()
    settings = load_settings(kafka_local_brokers=3)
    try:
        up = runner.invoke(main, ["dev", "up", "--brokers", "3", "--timeout", "240", "--json"])
        assert up.exit_code == 0, up.output
        services = json.loads(up.output.strip().splitlines()[-1])["services"]
        assert [(s["name"], s["state"], s["action"]) for s in services] == [
            ("kafka-1", "running", "started"), ("kafka-2", "running", "started"), ("kafka-3", "running", "started"),
            ("redis", "running", "started")]
        # `dev up` returned once every broker saw all three registered; a broker starved of CPU on a
        # loaded machine can still miss heartbeats and be fenced for a moment after (CI saw [1, 2]).
        admin, deadline = AdminClient({"bootstrap.servers": bootstrap}), time.monotonic() + 60
        while (listed := sorted(admin.list_topics(timeout=30).brokers)) != [1, 2, 3] and time.monotonic() < deadline:
            time.sleep(1)
        assert listed == [1, 2, 3]
        ids = {(tmp_path / "data" / f"kafka-{i}" / "data" / "meta.properties").read_text().split("cluster.id=")[1]
               .split()[0] for i in (1, 2, 3)}
        assert len(ids) == 1  # one cluster, formatted once

        created = runner.invoke(main, ["topics", "create", "--json"])
        assert created.exit_code == 0, created.output
        doc = json.loads(created.output.strip().splitlines()[-1])
        assert (doc["brokers"], doc["replication"], doc["min_insync_replicas"]) == (3, 3, 2)
        infos = listed_topics(settings, len(doc["topics"]))
        assert len(infos) == len(doc["topics"])
        assert {(t.replication, t.min_insync_replicas) for t in infos} == {(3, "2")}
        delete_topics(settings)
    finally:
        down = runner.invoke(main, ["dev", "down", "--json"], env={"AIOS_KAFKA_LOCAL_BROKERS": "3"})
    assert down.exit_code == 0, down.output
    states = {s["name"]: (s["state"], s["action"]) for s in json.loads(down.output.strip().splitlines()[-1])["services"]}
    assert states == {name: ("stopped", "stopped") for name in ("kafka-1", "kafka-2", "kafka-3", "redis")}
