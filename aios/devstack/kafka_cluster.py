"""A local KRaft cluster: several brokers on loopback, each also a voter of the controller quorum,
with its own directory (<data>/kafka-<id>/) and the same cluster id.

``aios dev up --brokers 3`` starts one; the broker-loss tests build theirs with the same code.
The bootstrap setting names the brokers' client ports, one address per broker; their controllers
listen on AIOS_KAFKA_CONTROLLER_PORT and the ports after it.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from aios.devstack.kafka_broker import (
    KafkaRuntime,
    format_storage,
    formatted_cluster_id,
    launch_broker,
    new_cluster_id,
    render_server_properties,
)
from aios.devstack.processes import Layout
from aios.streams.errors import StackError
from aios.streams.settings import Settings
from aios.streams.topics import default_replication

LOOPBACK = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class BrokerNode:
    """One broker of a local cluster: its node id, ports and directory."""

    node_id: int
    port: int
    controller_port: int
    directory: Path

    @property
    def name(self) -> str:
        return self.directory.name

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_dir(self) -> Path:
        return self.directory / "data"

    @property
    def props(self) -> Path:
        return self.directory / "server.properties"

    @property
    def pidfile(self) -> Path:
        return self.directory / f"{self.name}.pid"

    @property
    def log(self) -> Path:
        return self.directory / f"{self.name}.log"


def cluster_nodes(settings: Settings, layout: Layout) -> list[BrokerNode]:
    """The brokers AIOS_KAFKA_LOCAL_BROKERS asks for, on the ports the settings give them."""
    count = settings.kafka.local_brokers
    addresses = [a.strip() for a in settings.kafka.bootstrap.split(",") if a.strip()]
    if len(addresses) != count:
        example = ",".join(f"127.0.0.1:{19092 + 2 * i}" for i in range(count))
        raise StackError(
            f"a local cluster of {count} brokers needs one client address per broker in "
            f"AIOS_KAFKA_BOOTSTRAP, which lists {len(addresses)}: set e.g. AIOS_KAFKA_BOOTSTRAP={example}"
        )
    nodes = []
    for i, address in enumerate(addresses):
        host, _, port = address.rpartition(":")
        if host not in LOOPBACK or not port.isdigit():
            raise StackError(f"AIOS_KAFKA_BOOTSTRAP: {address!r} is not a loopback host:port; the local "
                             "cluster listens on 127.0.0.1 only")
        node_id = i + 1
        nodes.append(BrokerNode(node_id, int(port), settings.kafka.controller_port + i,
                                layout.root / f"kafka-{node_id}"))
    clients = {n.port for n in nodes}
    controllers = {n.controller_port for n in nodes}
    if len(clients) != count or clients & controllers:
        raise StackError(
            f"the brokers' client ports {sorted(clients)} and controller ports {sorted(controllers)} "
            "(AIOS_KAFKA_CONTROLLER_PORT and the ports after it) must all differ: change one of them"
        )
    return nodes


def quorum_voters(nodes: list[BrokerNode]) -> str:
    return ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in nodes)


def cluster_id_of(nodes: list[BrokerNode]) -> str:
    """The id the nodes already formatted share, or a new one; nodes of two clusters are an error."""
    found = {cid for n in nodes if (cid := formatted_cluster_id(n.log_dir)) is not None}
    if len(found) > 1:
        dirs = ", ".join(str(n.log_dir) for n in nodes)
        raise StackError(f"the brokers' directories belong to different clusters ({', '.join(sorted(found))}): "
                         f"remove {dirs} if they hold nothing you need")
    return found.pop() if found else new_cluster_id()


def write_node_config(node: BrokerNode, nodes: list[BrokerNode], *, partitions: int,
                      overrides: dict[str, str] | None = None) -> None:
    node.log_dir.mkdir(parents=True, exist_ok=True)
    node.props.write_text(render_server_properties(
        kafka_port=node.port, controller_port=node.controller_port, log_dir=node.log_dir,
        partitions=partitions, node_id=node.node_id, voters=quorum_voters(nodes),
        replication=default_replication(len(nodes)), overrides=overrides))


def start_nodes(runtime: KafkaRuntime, nodes: list[BrokerNode], start: list[BrokerNode], *, heap_mb: int,
                partitions: int, overrides: dict[str, str] | None = None) -> dict[int, int]:
    """Configure, format (once, with the cluster's id) and launch the ``start`` nodes of the
    cluster ``nodes``; returns node id -> pid. The others are assumed to be running already."""
    cluster_id = cluster_id_of(nodes)
    pids = {}
    for node in start:
        write_node_config(node, nodes, partitions=partitions, overrides=overrides)
        format_storage(runtime, node.props, node.log_dir, cluster_id)
        proc = launch_broker(runtime, node.props, heap_mb, node.log)
        node.pidfile.write_text(f"{proc.pid}\n")
        pids[node.node_id] = proc.pid
    return pids


@dataclass(frozen=True)
class QuorumStatus:
    """The KRaft metadata quorum as Kafka's MetadataQuorumCommand describes it."""

    leader_id: int
    leader_epoch: int
    voters: tuple[int, ...]


_FIELD = re.compile(r"^(\w+):\s+(.*)$", re.MULTILINE)


def parse_quorum_status(text: str) -> QuorumStatus:
    """``kafka-metadata-quorum describe --status`` output -> its leader, epoch and voters."""
    fields = dict(_FIELD.findall(text))
    try:
        voters = tuple(int(v) for v in re.findall(r'"id":\s*(\d+)', fields.get("CurrentVoters", "")))
        if not voters:  # older tools print the ids as a plain list: [1,2,3]
            voters = tuple(int(v) for v in re.findall(r"\d+", fields.get("CurrentVoters", "")))
        return QuorumStatus(int(fields["LeaderId"]), int(fields["LeaderEpoch"]), voters)
    except (KeyError, ValueError) as exc:
        raise StackError(f"unexpected answer from the metadata quorum command:\n{text.strip()}") from exc


def describe_quorum(runtime: KafkaRuntime, bootstrap: str, timeout_s: float = 60.0,
                    command_config: Path | None = None) -> QuorumStatus:
    """Ask the cluster which controller leads the metadata quorum (the active controller)."""
    args = ["--bootstrap-server", bootstrap]
    if command_config is not None:
        args += ["--command-config", str(command_config)]
    out = subprocess.run(  # noqa: S603
        runtime.command("org.apache.kafka.tools.MetadataQuorumCommand", *args, "describe", "--status", tool=True,
                        heap_mb=128),
        capture_output=True, text=True, timeout=timeout_s)
    if out.returncode != 0:
        raise StackError(f"describing the metadata quorum at {bootstrap} failed: {(out.stdout + out.stderr).strip()}")
    return parse_quorum_status(out.stdout)
