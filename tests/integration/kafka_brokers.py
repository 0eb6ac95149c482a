"""Kafka brokers the tests start themselves, on free loopback ports under a temporary directory,
with the dev stack's own code (aios.devstack): a 3-broker KRaft cluster whose brokers can be
SIGKILLed and restarted, and a broker that speaks only TLS and SASL/SCRAM with ACLs, its
certificates made by a throwaway CA. The shared broker on 9092 is never touched."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from aios.devstack.kafka_broker import (
    KAFKA_MARKER,
    SHORT_LIVED_JVM,
    KafkaRuntime,
    format_storage,
    kafka_answers,
    launch_broker,
    new_cluster_id,
)
from aios.devstack.kafka_cluster import BrokerNode, describe_quorum, start_nodes, write_node_config
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
    return KafkaRuntime(find_java(which), ensure_kafka_jars(KAFKA_INFRA, which), KAFKA_INFRA / "log4j.properties",
                        jvm_flags=SHORT_LIVED_JVM)


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
            return kafka_answers(node.address, node_ids=[n.node_id for n in self.nodes])
        wait_for(ready, f"broker {node.node_id} registered, and seeing every broker", timeout_s, node.log)

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
    out = subprocess.run(runtime.command(main, *args, heap_mb=128, tool=True), capture_output=True, text=True,
                         timeout=timeout_s)
    if out.returncode != 0:
        raise RuntimeError(f"{main} {' '.join(args)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}")
    return out.stdout


# --- a broker with TLS and SASL/SCRAM, its certificates made here (no one's real CA) ------------


@dataclass(frozen=True)
class Pem:
    """A private key and its certificate, as PEM files."""

    key: Path
    cert: Path


class ThrowawayCA:
    """A certificate authority that lives for one test session, with ``cryptography``."""

    def __init__(self, directory: Path, name: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory, self.name = directory, name
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(minutes=5))
                     .not_valid_after(now + datetime.timedelta(days=2))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                     .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                  content_commitment=False, key_encipherment=False,
                                                  data_encipherment=False, key_agreement=False,
                                                  encipher_only=False, decipher_only=False), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.cert_file = directory / f"{name}.pem"
        self.cert_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, common_name: str, *, server: bool) -> Pem:
        """A leaf certificate for ``common_name``; a server's names 127.0.0.1 and localhost."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
                   .issuer_name(self.cert.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   # The broker is also a TLS client (of its controller listener): it needs both usages.
                   .add_extension(x509.ExtendedKeyUsage([usage, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        pem = Pem(self.directory / f"{common_name}.key", self.directory / f"{common_name}.crt")
        pem.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
        pem.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return pem


BROKER_PRINCIPAL = "CN=kafka-broker"
WORKER_PRINCIPAL = "CN=aios-worker"  # the platform's own identity on the mutual-TLS listener
ADMIN, ADMIN_PASSWORD = "aios", "aios-admin-secret"
INGEST, INGEST_PASSWORD = "ingest", "ingest-secret"


class SecureBroker:
    """One KRaft broker whose listeners all speak TLS: the controller's and ``SSL`` (both mutual
    TLS: the broker and the platform's workers present certificates), and ``SASL_SSL`` with
    SCRAM-SHA-512 users made at format time. StandardAuthorizer enforces ACLs; the broker and the
    ``aios`` user are super users, anyone else needs an ACL."""

    def __init__(self, root: Path) -> None:
        self.runtime = kafka_runtime()
        self.root = root
        self.ca = ThrowawayCA(root / "tls", "aios-test-ca")
        self.broker_pem = self.ca.issue("kafka-broker", server=True)
        self.worker_pem = self.ca.issue("aios-worker", server=False)
        self.stranger_ca = ThrowawayCA(root / "tls-other", "someone-elses-ca")
        self.node = BrokerNode(1, free_port(), free_port(), root / "kafka-1")
        self.sasl_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        # Kafka reads a PEM keystore as one file: the key, then the certificate chain.
        self.keystore = root / "tls" / "broker-keystore.pem"
        self.keystore.write_bytes(self.broker_pem.key.read_bytes() + self.broker_pem.cert.read_bytes()
                                  + self.ca.cert_file.read_bytes())

    @property
    def ssl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.node.port}"

    @property
    def sasl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.sasl_port}"

    def properties(self) -> dict[str, str]:
        n = self.node
        return {
            "listeners": f"CONTROLLER://127.0.0.1:{n.controller_port},SSL://127.0.0.1:{n.port},"
                         f"SASL_SSL://127.0.0.1:{self.sasl_port}",
            "advertised.listeners": f"SSL://127.0.0.1:{n.port},SASL_SSL://127.0.0.1:{self.sasl_port}",
            "listener.security.protocol.map": "CONTROLLER:SSL,SSL:SSL,SASL_SSL:SASL_SSL",
            "inter.broker.listener.name": "SSL",
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.keystore),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.ca.cert_file),
            "ssl.client.auth": "required",
            "listener.name.sasl_ssl.ssl.client.auth": "none",
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:{BROKER_PRINCIPAL};User:{WORKER_PRINCIPAL};User:{ADMIN}",
            "allow.everyone.if.no.acl.found": "false",
        }

    def start(self, timeout_s: float = 240.0) -> None:
        n = self.node
        write_node_config(n, [n], partitions=3, overrides=self.properties())
        scram = [f"SCRAM-SHA-512=[name={ADMIN},password={ADMIN_PASSWORD}]",
                 f"SCRAM-SHA-512=[name={INGEST},password={INGEST_PASSWORD}]"]
        format_storage(self.runtime, n.props, n.log_dir, new_cluster_id(), scram)
        self.proc = launch_broker(self.runtime, n.props, HEAP_MB, n.log)
        wait_for(self._answers, "the TLS/SASL broker answering", timeout_s, n.log)

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"the broker exited ({self.proc.returncode}):\n{tail(self.node.log, 40)}")
        admin = AdminClient({"bootstrap.servers": self.sasl_bootstrap, "log_level": 0, **self.sasl_config()})
        try:
            admin.list_topics(timeout=2)
        except KafkaException:
            return False
        return True

    def sasl_config(self, user: str = ADMIN, password: str = ADMIN_PASSWORD) -> dict[str, str]:
        return {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": user,
                "sasl.password": password, "ssl.ca.location": str(self.ca.cert_file)}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(Exception):
                stop_process(self.proc.pid, KAFKA_MARKER, timeout_s=20)
