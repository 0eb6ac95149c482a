"""Kafka brokers the tests start themselves, on free loopback ports under a temporary directory,
with the dev stack's own code (aios.devstack): a 3-broker KRaft cluster whose brokers can be
SIGKILLed and restarted. The shared broker on 9092 is never touched."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

from confluent_kafka.admin import AdminClient

from aios.devstack.kafka_broker import KAFKA_MARKER, KafkaRuntime, kafka_answers, launch_broker
from aios.devstack.kafka_cluster import BrokerNode, describe_quorum, start_nodes
from aios.devstack.processes import CHILDREN, stop_process, tail
from aios.devstack.toolchain import REPO_ROOT, ensure_kafka_jars, find_java, which_on
from aios.streams.settings import Settings
from aios.streams.topics import TopicInfo, list_topics
from tests.integration.local_servers import free_port

KAFKA_INFRA = REPO_ROOT / "infra" / "kafka"
# Brokers are JVMs on a machine shared by many: a small heap each is plenty for a test's topics.
HEAP_MB = 320


def kafka_runtime() -> KafkaRuntime:
    which = which_on(None)
    return KafkaRuntime(find_java(which), ensure_kafka_jars(KAFKA_INFRA, which), KAFKA_INFRA / "log4j.properties")


def wait_for(ready: object, what: str, timeout_s: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if callable(ready) and ready():
            return
        time.sleep(0.3)
    raise RuntimeError(f"{what} not within {timeout_s:.0f} s" + (f"; last lines of {log}:\n{tail(log, 40)}" if log
                                                                  else ""))


class LocalCluster:
    """Three (or ``size``) brokers that are also the controller quorum, each in its own directory."""

    def __init__(self, root: Path, size: int = 3, *, partitions: int = 3) -> None:
        self.runtime = kafka_runtime()
        self.partitions = partitions
        self.nodes = [BrokerNode(i, free_port(), free_port(), root / f"kafka-{i}") for i in range(1, size + 1)]
        self.pids: dict[int, int] = {}

    @property
    def bootstrap(self) -> str:
        return ",".join(n.address for n in self.nodes)

    def node(self, node_id: int) -> BrokerNode:
        return next(n for n in self.nodes if n.node_id == node_id)

    def start(self, timeout_s: float = 240.0) -> None:
        self.pids = start_nodes(self.runtime, self.nodes, self.nodes, heap_mb=HEAP_MB, partitions=self.partitions)
        for node in self.nodes:
            self._wait_registered(node, timeout_s)

    def _wait_registered(self, node: BrokerNode, timeout_s: float) -> None:
        def ready() -> bool:
            proc = CHILDREN.get(self.pids[node.node_id])
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"broker {node.node_id} exited ({proc.returncode}):\n{tail(node.log, 40)}")
            return kafka_answers(node.address, node_id=node.node_id)
        wait_for(ready, f"broker {node.node_id} registered in the cluster", timeout_s, node.log)

    def kill(self, node_id: int) -> None:
        """SIGKILL: no shutdown, no leadership hand-over, no flush."""
        pid = self.pids.pop(node_id)
        os.kill(pid, signal.SIGKILL)
        proc = CHILDREN.pop(pid, None)
        if proc is not None:
            proc.wait(30)

    def restart(self, node_id: int, timeout_s: float = 240.0) -> None:
        node = self.node(node_id)
        self.pids[node_id] = launch_broker(self.runtime, node.props, HEAP_MB, node.log).pid
        self._wait_registered(node, timeout_s)

    def stop(self) -> None:
        for pid in list(self.pids.values()):
            with contextlib.suppress(Exception):
                stop_process(pid, KAFKA_MARKER, timeout_s=20)
        self.pids.clear()

    def admin(self) -> AdminClient:
        return AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})

    def leaders(self) -> Counter[int]:
        """Partitions led per broker, over every topic (the internal ones included)."""
        meta = self.admin().list_topics(timeout=30)
        return Counter(p.leader for t in meta.topics.values() for p in t.partitions.values() if p.leader >= 0)

    def under_replicated(self) -> list[str]:
        meta = self.admin().list_topics(timeout=30)
        return [f"{name}[{p.id}]" for name, t in meta.topics.items() for p in t.partitions.values()
                if len(p.isrs) < len(p.replicas)]

    def wait_fully_replicated(self, timeout_s: float = 180.0) -> None:
        wait_for(lambda: not self.under_replicated(), "every partition back in sync", timeout_s)

    def active_controller(self) -> int:
        """The leader of the KRaft metadata quorum, as Kafka's own MetadataQuorumCommand reports it."""
        return describe_quorum(self.runtime, self.bootstrap).leader_id


def listed_topics(settings: Settings, count: int, timeout_s: float = 60.0) -> list[TopicInfo]:
    """``list_topics`` once it shows ``count`` topics: each broker learns of new topics from the
    metadata log on its own, and the one answering may be a moment behind."""
    deadline = time.monotonic() + timeout_s
    while len(infos := list_topics(settings)) < count and time.monotonic() < deadline:
        time.sleep(0.5)
    return infos


def run_java_tool(runtime: KafkaRuntime, main: str, *args: str, timeout_s: float = 120.0) -> str:
    out = subprocess.run(runtime.command(main, *args, heap_mb=128), capture_output=True, text=True,
                         timeout=timeout_s)
    if out.returncode != 0:
        raise RuntimeError(f"{main} {' '.join(args)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}")
    return out.stdout
