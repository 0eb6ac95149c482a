"""The local Kafka broker: a KRaft broker from Maven Central jars, its server.properties and
cluster id, formatting its storage, starting it, and telling that it answers.

One broker is the default local stack; :mod:`aios.devstack.kafka_cluster` starts several of
these, each a broker and a voter of the controller quorum.
"""

from __future__ import annotations

import base64
import subprocess
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from aios.devstack.processes import CHILDREN, Layout, port_open, raise_open_files_limit
from aios.streams.errors import StackError
from aios.streams.settings import Settings
from aios.streams.topics import default_min_insync

KAFKA_MARKER = "kafka.Kafka"


def render_server_properties(
    *,
    kafka_port: int,
    controller_port: int,
    log_dir: Path,
    partitions: int = 3,
    node_id: int = 1,
    voters: str | None = None,
    replication: int = 1,
    overrides: Mapping[str, str] | None = None,
) -> str:
    """A broker's server.properties: KRaft combined mode (broker and controller), loopback only, no
    auto-create. ``voters`` lists the controller quorum (``id@host:port,…``; default: this node
    alone); ``replication`` sizes the internal topics (consumer offsets, transaction state) and the
    brokers' defaults; ``overrides`` replace or add properties (listeners, TLS, SASL, ACLs)."""
    min_isr = str(default_min_insync(replication))
    props = {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.voters": voters or f"{node_id}@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{kafka_port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{kafka_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(log_dir),
        "num.partitions": str(partitions),
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": str(replication),
        "transaction.state.log.replication.factor": str(replication),
        "transaction.state.log.min.isr": min_isr,
        "default.replication.factor": str(replication),
        "min.insync.replicas": min_isr,
        "group.initial.rebalance.delay.ms": "0",
    }
    props.update(overrides or {})
    lines = ["# Written by aios/devstack on every start of this broker; edits are overwritten."]
    lines += [f"{key}={value}" for key, value in props.items()]
    return "\n".join(lines) + "\n"


def new_cluster_id() -> str:
    """A KRaft cluster id: a random 16-byte uuid in unpadded base64url, as StorageTool random-uuid makes."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not cid.startswith("-"):  # Kafka avoids ids that look like a command-line flag
            return cid


def formatted_cluster_id(log_dir: Path) -> str | None:
    """The cluster id a formatted log directory belongs to (its meta.properties), else None."""
    try:
        text = (log_dir / "meta.properties").read_text()
    except FileNotFoundError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "cluster.id":
            return value.strip()
    return None


def kafka_answers(bootstrap: str, timeout: float = 2.0, *, node_ids: Collection[int] = ()) -> bool:
    """Whether the broker(s) at ``bootstrap`` answer a metadata request; with ``node_ids``, whether
    the answer also lists each of those brokers as registered and unfenced."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        meta = admin.list_topics(timeout=timeout)
    except KafkaException:
        return False
    return all(node in meta.brokers for node in node_ids)


# A JVM that lives for seconds or minutes (a tool, a test's broker) spends more CPU compiling than the
# compiled code saves: the client compiler alone and the serial collector. On this 2-core machine a
# 3-broker test cluster then started on 7.1 CPU-s instead of 11.8, and idled on 40% less.
SHORT_LIVED_JVM = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")


@dataclass(frozen=True)
class KafkaRuntime:
    """What running a broker needs: java, the jars' folder and the log4j configuration.

    ``jvm_flags`` go on every broker's command line (a test passes ``SHORT_LIVED_JVM``); tools such
    as the storage formatter always run as short-lived JVMs."""

    java: str
    lib: Path
    log4j: Path
    jvm_flags: tuple[str, ...] = ()

    def command(self, main: str, *args: str, heap_mb: int | None = None, tool: bool = False) -> list[str]:
        """A java command line running ``main`` from the Kafka jars (no shell involved)."""
        heap = [f"-Xmx{heap_mb}m"] if heap_mb is not None else []
        flags = SHORT_LIVED_JVM if tool else self.jvm_flags
        # java expands the classpath wildcard itself.
        return [self.java, *heap, *flags, "-Djava.awt.headless=true", f"-Dlog4j.configuration=file:{self.log4j}",
                "-cp", str(self.lib / "*"), main, *args]


def format_storage(runtime: KafkaRuntime, props: Path, log_dir: Path, cluster_id: str,
                   scram: Sequence[str] = ()) -> None:
    """Format a broker's log directory for ``cluster_id`` unless it already is. ``scram`` entries
    (``SCRAM-SHA-512=[name=…,password=…]``) create SCRAM users in the cluster's first metadata."""
    if (log_dir / "meta.properties").exists():
        return
    args = ["format", "-t", cluster_id, "-c", str(props)]
    for credential in scram:
        args += ["--add-scram", credential]
    out = subprocess.run(  # noqa: S603
        runtime.command("kafka.tools.StorageTool", *args, tool=True), capture_output=True, text=True, timeout=180
    )
    if out.returncode != 0:
        raise StackError(
            f"formatting Kafka storage in {log_dir} failed: {(out.stdout + out.stderr).strip()}\n"
            f"remove {log_dir} if it holds nothing you need, then start again"
        )


def launch_broker(runtime: KafkaRuntime, props: Path, heap_mb: int, log: Path) -> subprocess.Popen[bytes]:
    """Start one broker on a formatted directory; its output goes to ``log``."""
    with log.open("ab") as out:
        proc = subprocess.Popen(  # noqa: S603
            runtime.command("kafka.Kafka", str(props), heap_mb=heap_mb),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=props.parent,
            start_new_session=True,  # outlives this process and ignores its Ctrl-C
            preexec_fn=raise_open_files_limit,
        )
    CHILDREN[proc.pid] = proc
    return proc


def start_kafka(settings: Settings, layout: Layout, runtime: KafkaRuntime) -> int:
    """The single-node stack's broker, under <data>/kafka; returns its pid."""
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
    format_storage(runtime, props, log_dir, new_cluster_id())
    proc = launch_broker(runtime, props, settings.kafka.heap_mb, layout.file("kafka", "log"))
    layout.file("kafka", "pid").write_text(f"{proc.pid}\n")
    return proc.pid
