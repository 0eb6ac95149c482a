"""The local Kafka broker: a single-node KRaft broker from Maven Central jars, its server.properties
and cluster id, and how to start it and tell that it answers."""

from __future__ import annotations

import base64
import subprocess
import uuid
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from aios.devstack.processes import CHILDREN, Layout, port_open, raise_open_files_limit
from aios.streams.errors import StackError
from aios.streams.settings import Settings

KAFKA_MARKER = "kafka.Kafka"


def render_server_properties(
    *, kafka_port: int, controller_port: int, log_dir: Path, partitions: int = 3
) -> str:
    """The broker's server.properties: KRaft combined mode, one node, loopback only, no auto-create."""
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{kafka_port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{kafka_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(log_dir),
        "num.partitions": str(partitions),
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
    }
    lines = ["# Written by streams/devstack.py on every `aios dev up`; edits are overwritten."]
    lines += [f"{key}={value}" for key, value in props.items()]
    return "\n".join(lines) + "\n"


def new_cluster_id() -> str:
    """A KRaft cluster id: a random 16-byte uuid in unpadded base64url, as StorageTool random-uuid makes."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not cid.startswith("-"):  # Kafka avoids ids that look like a command-line flag
            return cid


def kafka_answers(bootstrap: str, timeout: float = 2.0) -> bool:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        admin.list_topics(timeout=timeout)
    except KafkaException:
        return False
    return True


def start_kafka(settings: Settings, layout: Layout, kafka_infra: Path, java: str, lib: Path) -> int:
    if port_open(settings.kafka.controller_port):
        raise StackError(
            f"the KRaft controller port {settings.kafka.controller_port} is already in use: "
            "free it or set AIOS_KAFKA_CONTROLLER_PORT to a free port"
        )
    kafka_dir = layout.root / "kafka"
    log_dir = kafka_dir / "data"
    log_dir.mkdir(parents=True, exist_ok=True)
    props = kafka_dir / "server.properties"
    props.write_text(
        render_server_properties(
            kafka_port=settings.kafka.port,
            controller_port=settings.kafka.controller_port,
            log_dir=log_dir,
            partitions=settings.kafka.topic_partitions,
        )
    )
    classpath = str(lib / "*")  # java expands the wildcard itself; no shell involved
    log4j = f"-Dlog4j.configuration=file:{kafka_infra / 'log4j.properties'}"
    if not (log_dir / "meta.properties").exists():
        fmt = [java, log4j, "-cp", classpath, "kafka.tools.StorageTool", "format"]
        out = subprocess.run(  # noqa: S603
            [*fmt, "-t", new_cluster_id(), "-c", str(props)], capture_output=True, text=True, timeout=120
        )
        if out.returncode != 0:
            raise StackError(
                f"formatting Kafka storage in {log_dir} failed: {(out.stdout + out.stderr).strip()}\n"
                f"remove {log_dir} if it holds nothing you need, then run up again"
            )
    with layout.file("kafka", "log").open("ab") as log:
        proc = subprocess.Popen(  # noqa: S603
            [
                java,
                f"-Xmx{settings.kafka.heap_mb}m",
                "-Djava.awt.headless=true",
                log4j,
                "-cp",
                classpath,
                "kafka.Kafka",
                str(props),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=kafka_dir,
            start_new_session=True,  # outlives this process and ignores its Ctrl-C
            preexec_fn=raise_open_files_limit,
        )
    CHILDREN[proc.pid] = proc
    layout.file("kafka", "pid").write_text(f"{proc.pid}\n")
    return proc.pid
