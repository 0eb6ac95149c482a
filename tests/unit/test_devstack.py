"""Pure helpers of the dev stack, and the prerequisite checks that fail before anything starts."""

from __future__ import annotations

import base64
import os
import shutil
import socket
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from aios import devstack
from aios.streams.errors import StackError
from aios.streams.settings import Settings, load_settings


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """A stack on free ports that nothing answers on, so `up` has to start both services."""
    return load_settings(
        data_dir=tmp_path / "data",
        kafka_bootstrap=f"127.0.0.1:{_free_port()}",
        kafka_controller_port=_free_port(),
        redis_url=f"redis://127.0.0.1:{_free_port()}/0",
    )


def _bin_dir(tmp_path: Path, **scripts: str) -> str:
    """A PATH directory holding the given shell scripts (name -> body)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in scripts.items():
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(bin_dir)


def _props(text: str) -> dict[str, str]:
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def test_server_properties_are_kraft_combined_single_node() -> None:
    props = _props(
        devstack.render_server_properties(kafka_port=19092, controller_port=19093, log_dir=Path("/d"))
    )
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["auto.create.topics.enable"] == "false"
    assert props["log.dirs"] == "/d"
    assert props["num.partitions"] == "3"
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor"):
        assert props[key] == "1"
    assert props["transaction.state.log.min.isr"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15\nOpenJDK Runtime Environment (build 17.0.15+6)', 17),
        ('java version "1.8.0_292"\nJava(TM) SE Runtime Environment', 8),
        ('openjdk version "21" 2023-09-19', 21),
        ('openjdk version "11.0.2-ea" 2019-01-15', 11),
        ("openjdk 22.0.1 2024-04-16", 22),
        ("", None),
        ("command not found", None),
    ],
)
def test_parse_java_major(output: str, major: int | None) -> None:
    assert devstack.parse_java_major(output) == major


def test_cluster_id_is_base64url_of_16_bytes() -> None:
    for _ in range(200):
        cid = devstack.new_cluster_id()
        assert len(cid) == 22 and not cid.startswith("-")
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16


def test_tail_keeps_last_lines_and_notes_a_missing_log(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert devstack.tail(log, 3) == "line 97\nline 98\nline 99"
    assert "no log" in devstack.tail(tmp_path / "missing.log")


def test_status_of_a_fresh_data_dir_is_stopped(settings: Settings) -> None:
    report = devstack.status(settings)
    assert [(s.name, s.state, s.pid) for s in report.services] == [
        ("kafka", "stopped", None),
        ("redis", "stopped", None),
    ]
    assert report.to_dict()["services"][0]["address"] == settings.kafka.bootstrap


def test_up_without_java_names_java_and_starts_nothing(settings: Settings, tmp_path: Path) -> None:
    redis_server = shutil.which("redis-server")
    assert redis_server is not None
    bin_dir = _bin_dir(tmp_path)
    os.symlink(redis_server, Path(bin_dir) / "redis-server")
    with pytest.raises(StackError, match=r"Java 17\+ not found.*apt-get install -y openjdk-17-jre-headless"):
        devstack.up(settings, path=bin_dir)
    assert [s.state for s in devstack.status(settings).services] == ["stopped", "stopped"]


def test_up_with_old_java_says_17_is_needed(settings: Settings, tmp_path: Path) -> None:
    bin_dir = _bin_dir(tmp_path, java="echo 'openjdk version \"11.0.2\" 2019-01-15' >&2")
    with pytest.raises(StackError, match=r"Java 17\+ is needed.*version 11"):
        devstack.up(settings, path=bin_dir)


def test_up_without_redis_server_says_how_to_install_it(settings: Settings, tmp_path: Path) -> None:
    bin_dir = _bin_dir(tmp_path, java="echo 'openjdk version \"17.0.15\" 2025-04-15' >&2")
    with pytest.raises(StackError, match=r"redis-server not found: apt-get install -y redis-server"):
        devstack.up(settings, path=bin_dir)
    assert [s.state for s in devstack.status(settings).services] == ["stopped", "stopped"]


def test_missing_jars_without_mvn_say_how_to_fetch_them(settings: Settings, tmp_path: Path) -> None:
    infra = tmp_path / "infra"
    (infra / "kafka" / "lib").mkdir(parents=True)
    bin_dir = _bin_dir(tmp_path, java="echo 'openjdk version \"17.0.15\" 2025-04-15' >&2")
    with pytest.raises(
        StackError, match=r"mvn is not on PATH: apt-get install -y maven.*dependency:copy-dependencies"
    ):
        devstack.up(settings, infra_dir=infra, path=bin_dir)


def test_a_port_taken_by_something_else_is_reported(settings: Settings) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", settings.stores.redis_port))
        squatter.listen()
        with pytest.raises(StackError, match=r"does not answer as redis.*AIOS_REDIS_URL"):
            devstack.up(settings)


def test_down_with_nothing_running_is_harmless(settings: Settings) -> None:
    report = devstack.down(settings)
    assert [(s.state, s.action) for s in report.services] == [("stopped", "none"), ("stopped", "none")]


def test_stale_pidfile_is_not_ours(settings: Settings) -> None:
    pidfile = settings.stores.data_dir / "kafka" / "kafka.pid"
    pidfile.parent.mkdir(parents=True)
    pidfile.write_text(f"{os.getpid()}\n")  # alive, but pytest is not a Kafka broker
    assert devstack.status(settings).services[0].state == "stopped"
    devstack.down(settings)
    assert not pidfile.exists()


def test_cli_status_json_and_table(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from aios.cli.dev import dev

    monkeypatch.setenv("AIOS_DATA_DIR", str(settings.stores.data_dir))
    monkeypatch.setenv("AIOS_KAFKA_BOOTSTRAP", settings.kafka.bootstrap)
    monkeypatch.setenv("AIOS_REDIS_URL", settings.stores.redis_url)
    result = CliRunner().invoke(dev, ["status", "--json"])
    assert result.exit_code == 0, result.output
    import json

    document = json.loads(result.output.strip().splitlines()[-1])
    assert [s["state"] for s in document["services"]] == ["stopped", "stopped"]
    table = CliRunner().invoke(dev, ["status"])
    assert table.exit_code == 0 and "kafka" in table.output and "stopped" in table.output


def test_cli_error_exits_1_with_the_message(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from aios.cli.dev import dev

    monkeypatch.setenv("AIOS_DATA_DIR", str(settings.stores.data_dir))
    monkeypatch.setenv("AIOS_KAFKA_BOOTSTRAP", settings.kafka.bootstrap)
    monkeypatch.setenv("AIOS_REDIS_URL", settings.stores.redis_url)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", settings.kafka.port))
        squatter.listen()
        result = CliRunner().invoke(dev, ["up"])
    assert result.exit_code == 1
    assert "does not answer as kafka" in result.output


# --- a local cluster (aios dev up --brokers 3) ------------------------------------------------


def test_cluster_node_properties_share_the_quorum_and_replicate_by_three() -> None:
    voters = "1@127.0.0.1:19101,2@127.0.0.1:19102,3@127.0.0.1:19103"
    props = _props(devstack.render_server_properties(
        kafka_port=19092, controller_port=19102, log_dir=Path("/d2"), node_id=2, voters=voters, replication=3))
    assert props["node.id"] == "2"
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == voters
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19102"
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                "default.replication.factor"):
        assert props[key] == "3"
    assert props["transaction.state.log.min.isr"] == props["min.insync.replicas"] == "2"


def test_overrides_replace_and_add_properties() -> None:
    props = _props(devstack.render_server_properties(
        kafka_port=1, controller_port=2, log_dir=Path("/d"),
        overrides={"listeners": "SSL://127.0.0.1:1", "authorizer.class.name": "X"}))
    assert props["listeners"] == "SSL://127.0.0.1:1"
    assert props["authorizer.class.name"] == "X"


def _cluster_settings(tmp_path: Path, bootstrap: str, controller_port: int = 19101) -> Settings:
    return load_settings(data_dir=tmp_path / "data", kafka_bootstrap=bootstrap, kafka_local_brokers=3,
                         kafka_controller_port=controller_port, redis_url=f"redis://127.0.0.1:{_free_port()}/0")


def test_cluster_nodes_take_the_bootstrap_ports_and_consecutive_controller_ports(tmp_path: Path) -> None:
    from aios.devstack.kafka_cluster import cluster_nodes, quorum_voters
    from aios.devstack.processes import Layout

    s = _cluster_settings(tmp_path, "127.0.0.1:19092,127.0.0.1:19094,localhost:19096")
    nodes = cluster_nodes(s, Layout.of(s))
    assert [(n.node_id, n.port, n.controller_port, n.name) for n in nodes] == [
        (1, 19092, 19101, "kafka-1"), (2, 19094, 19102, "kafka-2"), (3, 19096, 19103, "kafka-3")]
    assert quorum_voters(nodes) == "1@127.0.0.1:19101,2@127.0.0.1:19102,3@127.0.0.1:19103"
    assert nodes[1].pidfile == s.stores.data_dir.resolve() / "kafka-2" / "kafka-2.pid"


@pytest.mark.parametrize(("bootstrap", "controller", "message"), [
    ("127.0.0.1:19092", 19101, r"needs one client address per broker in AIOS_KAFKA_BOOTSTRAP, which lists 1"),
    ("127.0.0.1:19092,10.0.0.2:19094,127.0.0.1:19096", 19101, r"'10.0.0.2:19094' is not a loopback host:port"),
    ("127.0.0.1:19092,127.0.0.1:19094,127.0.0.1:19096", 19094, r"must all differ"),
    ("127.0.0.1:19092,127.0.0.1:19092,127.0.0.1:19096", 19101, r"must all differ"),
])
def test_a_cluster_the_settings_cannot_place_is_refused(tmp_path: Path, bootstrap: str, controller: int,
                                                         message: str) -> None:
    with pytest.raises(StackError, match=message):
        devstack.status(_cluster_settings(tmp_path, bootstrap, controller))


def test_status_of_a_fresh_cluster_lists_each_broker(tmp_path: Path) -> None:
    ports = [_free_port() for _ in range(3)]
    s = _cluster_settings(tmp_path, ",".join(f"127.0.0.1:{p}" for p in ports), controller_port=_free_port())
    assert [(x.name, x.state, x.address) for x in devstack.status(s).services] == [
        ("kafka-1", "stopped", f"127.0.0.1:{ports[0]}"), ("kafka-2", "stopped", f"127.0.0.1:{ports[1]}"),
        ("kafka-3", "stopped", f"127.0.0.1:{ports[2]}"), ("redis", "stopped", f"127.0.0.1:{s.stores.redis_port}")]


def test_cli_up_brokers_names_the_bootstrap_to_set(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from aios.cli.dev import dev

    monkeypatch.setenv("AIOS_DATA_DIR", str(settings.stores.data_dir))
    monkeypatch.setenv("AIOS_KAFKA_BOOTSTRAP", settings.kafka.bootstrap)
    result = CliRunner().invoke(dev, ["up", "--brokers", "3"])
    assert result.exit_code == 1
    assert "a local cluster of 3 brokers needs one client address per broker in AIOS_KAFKA_BOOTSTRAP" in result.output


def test_clusters_of_two_ids_are_refused(tmp_path: Path) -> None:
    from aios.devstack.kafka_cluster import BrokerNode, cluster_id_of

    nodes = [BrokerNode(i, 1000 + i, 2000 + i, tmp_path / f"kafka-{i}") for i in (1, 2)]
    for node, cid in zip(nodes, ("aaaaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbbbbbbbb"), strict=True):
        node.log_dir.mkdir(parents=True)
        (node.log_dir / "meta.properties").write_text(f"version=1\ncluster.id={cid}\nnode.id={node.node_id}\n")
    with pytest.raises(StackError, match="belong to different clusters"):
        cluster_id_of(nodes)
    (nodes[1].log_dir / "meta.properties").unlink()
    assert cluster_id_of(nodes) == "aaaaaaaaaaaaaaaaaaaaaa"  # a new node joins the cluster the others formed


def test_the_quorum_description_gives_the_active_controller() -> None:
    from aios.devstack.kafka_cluster import parse_quorum_status

    text = ("ClusterId:              Ab3xYzAAQ7eX0nN8kqZp1w\nLeaderId:               2\nLeaderEpoch:            7\n"
            "HighWatermark:          1234\nMaxFollowerLag:         0\nMaxFollowerLagTimeMs:   12\n"
            'CurrentVoters:          [{"id": 1, "directoryId": null, "endpoints": ["CONTROLLER://127.0.0.1:1"]}, '
            '{"id": 2, "directoryId": null, "endpoints": []}, {"id": 3, "directoryId": null, "endpoints": []}]\n'
            "CurrentObservers:       []\n")
    status = parse_quorum_status(text)
    assert (status.leader_id, status.leader_epoch, status.voters) == (2, 7, (1, 2, 3))
    assert parse_quorum_status("LeaderId: 1\nLeaderEpoch: 3\nCurrentVoters: [1,2,3]\n").voters == (1, 2, 3)
    with pytest.raises(StackError, match="unexpected answer"):
        parse_quorum_status("Error: the quorum is not available")


@given(st.text(max_size=300))
def test_any_answer_of_the_quorum_command_parses_or_is_a_stack_error(text: str) -> None:
    from aios.devstack.kafka_cluster import parse_quorum_status

    try:
        status = parse_quorum_status(text)
    except StackError:
        return
    assert isinstance(status.leader_id, int)
