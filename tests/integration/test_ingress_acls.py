"""The Kafka ACLs docs/api.md gives for the JSON ingress, on a real broker with SASL and the KRaft
authorizer, started by this test on free ports (the shared local broker is PLAINTEXT and must stay
so): a producer of JSON tasks may write the ingress topic and nothing else, an outsider may not
write it, and the real json-ingress processor, authenticated as itself through AIOS_KAFKA_SASL_*,
turns the records into Tasks."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from aios.devstack.kafka_broker import SHORT_LIVED_JVM, new_cluster_id
from aios.streams.pipeline import running
from aios.streams.settings import Settings
from aios.streams.topics import Topics
from tests.integration.helpers import wait_until
from tests.integration.local_servers import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "infra" / "kafka" / "lib"
USERS = {"admin": "admin-secret", "crm-connector": "crm-secret", "aios-ingress": "ingress-secret",
         "intruder": "intruder-secret"}


class SaslBroker:
    """A single-node KRaft broker with SASL/PLAIN users and StandardAuthorizer, deny by default."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port, self.controller = free_port(), free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self, user: str, **extra: object) -> dict[str, object]:
        return {"bootstrap.servers": self.bootstrap, "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": "PLAIN", "sasl.username": user, "sasl.password": USERS[user], **extra}

    def start(self) -> None:
        jaas = " ".join(f'user_{u}="{p}"' for u, p in USERS.items())
        props = {
            "process.roles": "broker,controller", "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller}",
            "listeners": f"SASL_PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller}",
            "advertised.listeners": f"SASL_PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER", "inter.broker.listener.name": "SASL_PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
            "sasl.enabled.mechanisms": "PLAIN", "sasl.mechanism.inter.broker.protocol": "PLAIN",
            "listener.name.sasl_plaintext.plain.sasl.jaas.config":
                'org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" '
                f'password="{USERS["admin"]}" {jaas};',
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            # The controller listener is plaintext on loopback: its principal is ANONYMOUS.
            "super.users": "User:admin;User:ANONYMOUS", "allow.everyone.if.no.acl.found": "false",
            "log.dirs": str(self.directory / "data"), "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1", "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1", "group.initial.rebalance.delay.ms": "0",
        }
        config = self.directory / "server.properties"
        config.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        log4j = f"-Dlog4j.configuration=file:{ROOT / 'infra' / 'kafka' / 'log4j.properties'}"
        classpath = str(LIB / "*")
        subprocess.run(["java", *SHORT_LIVED_JVM, log4j, "-cp", classpath, "kafka.tools.StorageTool", "format",  # noqa: S603, S607
                        "-t", new_cluster_id(), "-c", str(config)], check=True, capture_output=True, timeout=120)
        log = (self.directory / "broker.log").open("ab")
        self.process = subprocess.Popen(["java", "-Xmx384m", *SHORT_LIVED_JVM, log4j, "-cp", classpath,  # noqa: S603, S607
                                         "kafka.Kafka", str(config)], stdout=log, stderr=subprocess.STDOUT)
        admin = AdminClient(self.client("admin", log_level=0))  # quiet while the broker starts
        deadline = time.monotonic() + 120
        while True:
            try:
                admin.list_topics(timeout=2)
                return
            except KafkaException:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the SASL broker did not start: "
                                       + (self.directory / "broker.log").read_text()[-2000:]) from None
                time.sleep(0.5)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SaslBroker]:
    server = SaslBroker(tmp_path_factory.mktemp("sasl-broker"))
    try:
        server.start()
    except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
        pytest.fail(f"cannot start the SASL broker from {LIB}: {exc}")
    yield server
    server.stop()


def acl(user: str, kind: ResourceType, name: str, operation: AclOperation) -> AclBinding:
    return AclBinding(kind, name, ResourcePatternType.LITERAL, f"User:{user}", "*", operation,
                      AclPermissionType.ALLOW)


def produce(config: dict[str, object], topic: str, value: bytes) -> KafkaError | None:
    """Produce one record; the error it met, or None once it is acknowledged."""
    outcome: list[KafkaError | None] = []
    producer = Producer({**config, "message.timeout.ms": 10_000})
    producer.produce(topic, value, on_delivery=lambda err, _msg: outcome.append(err))
    producer.flush(15)
    return outcome[0] if outcome else KafkaError(KafkaError._MSG_TIMED_OUT)


async def test_the_documented_acls_keep_the_ingress_to_its_producers(broker: SaslBroker, settings: Settings) -> None:
    s = settings.replace(kafka_bootstrap=broker.bootstrap, kafka_security_protocol="SASL_PLAINTEXT",
                         kafka_sasl_mechanism="PLAIN", kafka_sasl_username="aios-ingress",
                         kafka_sasl_password="ingress-secret")
    topics = Topics.from_settings(s)
    group = f"{s.kafka.topic_prefix}-json-ingress"  # the group of `aios worker json-ingress`
    admin = AdminClient(broker.client("admin"))
    for future in admin.create_topics([NewTopic(t, 1, 1) for t in (topics.tasks_json, topics.tasks, topics.dlq)]
                                      ).values():
        future.result(30)
    # As docs/api.md gives them.
    bindings = [acl("crm-connector", ResourceType.TOPIC, topics.tasks_json, op)
                for op in (AclOperation.WRITE, AclOperation.DESCRIBE)]
    bindings += [acl("aios-ingress", ResourceType.TOPIC, topics.tasks_json, op)
                 for op in (AclOperation.READ, AclOperation.DESCRIBE)]
    bindings += [acl("aios-ingress", ResourceType.GROUP, group, AclOperation.READ)]
    bindings += [acl("aios-ingress", ResourceType.TOPIC, t, op)
                 for t in (topics.tasks, topics.dlq) for op in (AclOperation.WRITE, AclOperation.DESCRIBE)]
    for future in admin.create_acls(bindings).values():
        future.result(30)

    task = {"task_id": "lead-1", "description": "Follow up the lead", "project_id": "sales",
            "submitted_by": "crm-connector"}
    crm = broker.client("crm-connector")
    # New ACLs reach the broker's authorizer through the metadata log a moment after they commit.
    await wait_until(lambda: produce(crm, topics.tasks_json, json.dumps(task).encode()) is None, 30)
    denied = produce(crm, topics.tasks, b"not through the ingress")  # straight to aios.tasks: refused
    assert denied is not None and denied.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    outsider = produce(broker.client("intruder"), topics.tasks_json, b'{"description": "x"}')
    assert outsider is not None and outsider.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED

    # The real processor, authenticated as aios-ingress through the AIOS_KAFKA_SASL_* settings.
    async with running(s, ["json-ingress"], name="json-ingress"):
        reader = Consumer(broker.client("admin", **{"group.id": "check", "auto.offset.reset": "earliest"}))
        reader.subscribe([topics.tasks])

        def converted() -> bool:
            msg = reader.poll(1)
            return msg is not None and msg.error() is None and b"lead-1" in (msg.value() or b"")
        try:
            await wait_until(converted, 90)
        finally:
            reader.close()
    # Another group name is not the ingress's: reading the topic with it is refused.
    stranger = Consumer(broker.client("aios-ingress", **{"group.id": "not-the-ingress",
                                                          "auto.offset.reset": "earliest"}))
    stranger.subscribe([topics.tasks_json])
    try:
        def refused() -> bool:
            msg = stranger.poll(1)
            return msg is not None and msg.error() is not None and \
                msg.error().code() == KafkaError.GROUP_AUTHORIZATION_FAILED
        await wait_until(refused, 30, riding_out=(KafkaException,))
    finally:
        stranger.close()
