"""The local dev stack: a KRaft Kafka broker (or a local cluster of them) and a Redis server under
the data directory.

``up`` starts what is not already answering, ``down`` stops only what we started (pidfiles we own),
``status`` reports each service. No Docker: Kafka runs from Maven Central jars, Redis from Debian.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from aios.devstack.kafka_broker import KAFKA_MARKER, KafkaRuntime, kafka_answers, start_kafka
from aios.devstack.kafka_cluster import cluster_nodes, start_nodes
from aios.devstack.processes import (
    Action,
    Layout,
    ServiceStatus,
    StackReport,
    State,
    alive,
    owned_pid,
    port_open,
    stop_process,
    wait_until,
)
from aios.devstack.redis_server import REDIS_MARKER, redis_answers, start_redis
from aios.devstack.toolchain import REPO_ROOT, ensure_kafka_jars, find_java, which_on
from aios.streams.errors import StackError
from aios.streams.settings import Settings


@dataclass(frozen=True)
class _Broker:
    """A broker of the stack as ``status`` sees it: the single one, or a node of a local cluster."""

    name: str  # kafka, or kafka-<node id>
    port: int
    address: str  # what clients use to reach it
    node_id: int | None = None  # set for cluster nodes: answering means registered in the cluster
    cluster: tuple[int, ...] = ()  # every node of its cluster

    def pidfile(self, layout: Layout) -> Path:
        return layout.file(self.name, "pid")

    def answers(self) -> bool:
        return port_open(self.port) and kafka_answers(self.address, node_ids=() if self.node_id is None
                                                      else (self.node_id,))

    def ready(self) -> bool:
        """Answering and, for a cluster node, seeing every node registered: each broker learns of
        the others on its own, and one that does not see them yet would answer clients with part
        of the cluster."""
        return port_open(self.port) and kafka_answers(self.address, node_ids=self.cluster)


def _brokers(settings: Settings, layout: Layout) -> list[_Broker]:
    if settings.kafka.local_brokers == 1:
        return [_Broker("kafka", settings.kafka.port, settings.kafka.bootstrap)]
    nodes = cluster_nodes(settings, layout)
    ids = tuple(n.node_id for n in nodes)
    return [_Broker(n.name, n.port, n.address, n.node_id, ids) for n in nodes]


def _statuses(settings: Settings, layout: Layout, actions: Mapping[str, Action]) -> tuple[ServiceStatus, ...]:
    out = []
    for broker in _brokers(settings, layout):
        pid = owned_pid(broker.pidfile(layout), KAFKA_MARKER)
        state: State = "running" if pid is not None else "external" if broker.answers() else "stopped"
        out.append(ServiceStatus(broker.name, state, pid, broker.address, actions.get(broker.name, "none")))
    pid = owned_pid(layout.file("redis", "pid"), REDIS_MARKER)
    redis_state: State = "running" if pid is not None else "external" if _redis_answers(settings) else "stopped"
    redis_address = f"127.0.0.1:{settings.stores.redis_port}"
    out.append(ServiceStatus("redis", redis_state, pid, redis_address, actions.get("redis", "none")))
    return tuple(out)


def _redis_answers(settings: Settings) -> bool:
    return port_open(settings.stores.redis_port) and redis_answers(settings.stores.redis_url)


@contextlib.contextmanager
def _locked(layout: Layout) -> Iterator[None]:
    """One ``up`` or ``down`` at a time per data directory."""
    layout.root.mkdir(parents=True, exist_ok=True)
    with (layout.root / ".devstack.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def status(settings: Settings) -> StackReport:
    """Each service's state (running = ours, external = answering without our pidfile, stopped)."""
    started = time.monotonic()
    layout = Layout.of(settings)
    services = _statuses(settings, layout, {})
    return StackReport(services, str(layout.root), round(time.monotonic() - started, 3))


def up(
    settings: Settings,
    *,
    infra_dir: Path | None = None,
    path: str | None = None,
    kafka_timeout_s: float = 60.0,
    redis_timeout_s: float = 15.0,
) -> StackReport:
    """Start Kafka (AIOS_KAFKA_LOCAL_BROKERS brokers) and Redis unless they already answer, and wait
    until all do.

    ``path`` replaces PATH when looking up java, mvn and redis-server; ``infra_dir`` replaces the
    repository's ``infra/`` (holding ``kafka/pom.xml``, ``kafka/log4j.properties`` and ``kafka/lib``).
    """
    started = time.monotonic()
    layout = Layout.of(settings)
    kafka_infra = (infra_dir or REPO_ROOT / "infra") / "kafka"
    which = which_on(path)
    with _locked(layout):
        brokers = {b.name: b for b in _brokers(settings, layout)}
        found = {s.name: s for s in _statuses(settings, layout, {})}
        for service in found.values():
            port = brokers[service.name].port if service.name in brokers else settings.stores.redis_port
            env = ("AIOS_REDIS_URL=redis://127.0.0.1:<free port>/0" if service.name == "redis"
                   else "AIOS_KAFKA_BOOTSTRAP=127.0.0.1:<free port>[,…]")
            if service.state == "stopped" and port_open(port):
                raise StackError(
                    f"port {port} is in use by something that does not answer as {service.name}: "
                    f"free it or set {env}"
                )
        stopped = [name for name in brokers if found[name].state == "stopped"]
        # Check every prerequisite before starting anything, so a failure leaves nothing half-up.
        runtime = None
        if stopped:
            java, lib = find_java(which), ensure_kafka_jars(kafka_infra, which)
            runtime = KafkaRuntime(java, lib, kafka_infra / "log4j.properties")
        redis_server = None
        if found["redis"].state == "stopped":
            redis_server = which("redis-server")
            if redis_server is None:
                raise StackError("redis-server not found: apt-get install -y redis-server")

        pids = {name: found[name].pid for name in brokers}
        if runtime is not None:
            pids.update(_start_brokers(settings, layout, runtime, stopped))
        if redis_server is not None:
            start_redis(settings, layout, redis_server)
        for name, broker in brokers.items():
            if found[name].state == "external":
                continue
            wait_until(broker.ready, functools.partial(_exited, pids[name] or 0), kafka_timeout_s,
                       "Kafka" if name == "kafka" else f"Kafka ({name})", layout.file(name, "log"))
        if found["redis"].state != "external":
            wait_until(
                lambda: _redis_answers(settings) and layout.file("redis", "pid").exists(),
                lambda: False,  # redis daemonizes itself; a failed start shows as a timeout with its log
                redis_timeout_s,
                "Redis",
                layout.file("redis", "log"),
            )
        actions: dict[str, Action] = {name: "started" if name in stopped else "kept" for name in brokers}
        actions["redis"] = "started" if redis_server else "kept"
        services = _statuses(settings, layout, actions)
    return StackReport(services, str(layout.root), round(time.monotonic() - started, 3))


def _stop(pidfile: Path, marker: str, timeout_s: float) -> str | None:
    """Stop the process of a pidfile we own; returns the service's name if there was one."""
    pid = owned_pid(pidfile, marker)
    if pid is not None:
        stop_process(pid, marker, timeout_s)
    pidfile.unlink(missing_ok=True)
    return pidfile.parent.name if pid is not None else None


def _exited(pid: int) -> bool:
    return not alive(pid, KAFKA_MARKER)


def _start_brokers(settings: Settings, layout: Layout, runtime: KafkaRuntime, names: list[str]) -> dict[str, int]:
    if settings.kafka.local_brokers == 1:
        return {"kafka": start_kafka(settings, layout, runtime)}
    nodes = cluster_nodes(settings, layout)
    starting = [n for n in nodes if n.name in names]
    for node in starting:
        if port_open(node.controller_port):
            raise StackError(f"the KRaft controller port {node.controller_port} of {node.name} is already in "
                             "use: free it or set AIOS_KAFKA_CONTROLLER_PORT to the first of "
                             f"{len(nodes)} free ports")
    pids = start_nodes(runtime, nodes, starting, heap_mb=settings.kafka.heap_mb,
                       partitions=settings.kafka.topic_partitions)
    return {n.name: pids[n.node_id] for n in starting}


def down(settings: Settings, *, timeout_s: float = 30.0) -> StackReport:
    """Stop the services this data directory started (SIGTERM, then SIGKILL after ``timeout_s``):
    every broker with a pidfile here, a cluster's included, and Redis."""
    started = time.monotonic()
    layout = Layout.of(settings)
    with _locked(layout):
        brokers = [layout.file("kafka", "pid"), *sorted(layout.root.glob("kafka-*/kafka-*.pid"))]
        # A cluster's brokers stop together: stopped one by one, the last ones would wait for a
        # controller quorum that is already gone.
        with ThreadPoolExecutor(max_workers=len(brokers)) as pool:
            stopped = list(pool.map(lambda pidfile: _stop(pidfile, KAFKA_MARKER, timeout_s), brokers))
        stopped.append(_stop(layout.file("redis", "pid"), REDIS_MARKER, timeout_s))
        actions: dict[str, Action] = {name: "stopped" for name in stopped if name is not None}
        services = _statuses(settings, layout, actions)
    return StackReport(services, str(layout.root), round(time.monotonic() - started, 3))
