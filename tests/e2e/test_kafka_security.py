"""Kafka security for real (issue 20, section 2): a broker of our own whose listeners all speak TLS.

``SSL`` asks for client certificates (mutual TLS), ``SASL_SSL`` logs in with SCRAM-SHA-512, and
StandardAuthorizer enforces ACLs. The certificates come from a throwaway CA made in the test with
``cryptography``; the SCRAM users are made by Kafka's own storage tool when the broker is
formatted. The pipeline runs over both listeners: faust (aiokafka) and confluent-kafka clients,
the orchestrator's and the results committer's transactions, the CLI and the JSON bridges. A wrong
password or an untrusted certificate fails at start, naming the setting, within seconds. A
principal whose ACLs allow only producing to ``aios.tasks-json`` cannot read results.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from tests.e2e.conftest import AIOS, Cli
from tests.e2e.test_crash_safety import Worker
from tests.integration.kafka_brokers import (
    ADMIN,
    ADMIN_PASSWORD,
    INGEST,
    INGEST_PASSWORD,
    SecureBroker,
)

pytestmark = pytest.mark.integration

# A check that fails "within seconds" still starts a Python process first: on a loaded machine
# that alone takes a few seconds, and tens of them with four test workers on two cores. What this
# proves is that the process gives up with the setting's name instead of retrying forever.
FAILS_WITHIN_S = 75.0


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    secure = SecureBroker(tmp_path_factory.mktemp("secure-kafka"))
    try:
        secure.start()
        yield secure
    finally:
        secure.stop()  # even when a test failed


def _base_env(tmp_path: Path, prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIOS_", "OPENAI_"))}
    env.update({"AIOS_TOPIC_PREFIX": prefix, "AIOS_DATA_DIR": str(tmp_path / "data"), "AIOS_METRICS_PORT": "0",
                "AIOS_LLM": "offline:echo", "AIOS_API_PORT": "0",
                "AIOS_REDIS_URL": os.environ.get("AIOS_REDIS_URL", "redis://127.0.0.1:6379/0")})
    return env


def sasl_env(broker: SecureBroker, tmp_path: Path, prefix: str, *, user: str = ADMIN,
             password: str = ADMIN_PASSWORD, cafile: Path | None = None) -> dict[str, str]:
    return {**_base_env(tmp_path, prefix), "AIOS_KAFKA_BOOTSTRAP": broker.sasl_bootstrap,
            "AIOS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "AIOS_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "AIOS_KAFKA_SASL_USERNAME": user, "AIOS_KAFKA_SASL_PASSWORD": password,
            "AIOS_KAFKA_SSL_CAFILE": str(cafile or broker.ca.cert_file)}


def tls_env(broker: SecureBroker, tmp_path: Path, prefix: str, *, cafile: Path | None = None) -> dict[str, str]:
    return {**_base_env(tmp_path, prefix), "AIOS_KAFKA_BOOTSTRAP": broker.ssl_bootstrap,
            "AIOS_KAFKA_SECURITY_PROTOCOL": "SSL", "AIOS_KAFKA_SSL_CAFILE": str(cafile or broker.ca.cert_file),
            "AIOS_KAFKA_SSL_CERTFILE": str(broker.worker_pem.cert),
            "AIOS_KAFKA_SSL_KEYFILE": str(broker.worker_pem.key)}


def _prefix() -> str:
    return f"sec{uuid.uuid4().hex[:8]}"


def _admin(broker: SecureBroker) -> AdminClient:
    return AdminClient({"bootstrap.servers": broker.sasl_bootstrap, "log_level": 0, **broker.sasl_config()})


def _read_json_results(broker: SecureBroker, topic: str, want: set[str], timeout_s: float) -> dict[str, Any]:
    """Results from the JSON egress, read as an outside JSON consumer would (a Connect sink)."""
    consumer = Consumer({"bootstrap.servers": broker.sasl_bootstrap, "group.id": f"json-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "log_level": 0, **broker.sasl_config()})
    consumer.subscribe([topic])
    found: dict[str, Any] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while want - set(found) and time.monotonic() < deadline:
            for msg in consumer.consume(100, 0.5):
                if msg.error() is None:
                    doc = json.loads(msg.value())
                    found[doc["task_id"]] = doc
    finally:
        consumer.close()
    return found


def test_the_pipeline_runs_over_sasl_ssl_with_scram(broker: SecureBroker, tmp_path: Path) -> None:
    prefix = _prefix()
    cli = Cli(sasl_env(broker, tmp_path, prefix))
    created = cli.json("topics", "create")  # the admin client over SASL_SSL
    assert created["brokers"] == 1 and len(created["topics"]) > 10
    # The JSON ingress principal may produce to <prefix>.tasks-json, and nothing else.
    _grant_ingest(broker, f"{prefix}.tasks-json")

    # Transactional (orchestrator, results committer), faust (agents, json-ingress) and batch
    # (json-egress) processors, each its own process over SASL_SSL.
    workers = [Worker(cli, name) for name in ("orchestrator", "results", "agents", "json-ingress", "json-egress")]
    try:
        for worker in workers:
            worker.start()
        doc = cli.json("submit", "Say hello over TLS", "--wait", "--timeout", "120")
        assert doc["result"]["status"] == "succeeded", doc

        # A JSON task from the ingest principal (as Kafka Connect would produce it), through the
        # bridge, the orchestrator and an agent, out of the JSON egress.
        task = {"task_id": f"json-{uuid.uuid4().hex[:8]}", "project_id": "secure", "description": "Hello from JSON"}
        _produce_as_ingest(broker, f"{prefix}.tasks-json", json.dumps(task).encode())
        results = _read_json_results(broker, f"{prefix}.results-json", {task["task_id"]}, timeout_s=120)
        assert results.get(task["task_id"], {}).get("status") == "succeeded", results

        dead = {w.name: "".join(w.log[-30:]) for w in workers if w.proc is not None and w.proc.poll() is not None}
        assert not dead, dead
    finally:
        for worker in workers:
            worker.stop()


def test_the_pipeline_runs_over_mutual_tls(broker: SecureBroker, tmp_path: Path) -> None:
    prefix = _prefix()
    cli = Cli(tls_env(broker, tmp_path, prefix))
    cli.run("topics", "create")
    # Every processor in one process (aios up): faust, batch and transactional clients over mutual TLS.
    up = subprocess.Popen([*AIOS, "up", "--no-stack", "--no-api"], env=cli.env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    log: list[str] = []
    ready = threading.Event()

    def drain() -> None:
        for line in up.stderr or ():
            log.append(line)
            if "aios: ready" in line:
                ready.set()
    threading.Thread(target=drain, daemon=True).start()
    try:
        assert ready.wait(180), "aios up did not get ready over TLS:\n" + "".join(log[-40:])
        doc = cli.json("submit", "Say hello over mutual TLS", "--wait", "--timeout", "120")
        assert doc["result"]["status"] == "succeeded", doc
        tail = cli.json("tail", "results", "--from-beginning", "--limit", "1", "--timeout", "30")
        assert tail["events"][0]["event"]["task_id"] == doc["task_id"]
        assert up.poll() is None, "".join(log[-40:])
    finally:
        up.terminate()
        try:
            up.wait(90)
        except subprocess.TimeoutExpired:
            up.kill()


def _fails_fast(cli: Cli, *args: str) -> str:
    """Run a command that must fail at start; returns what it said."""
    started = time.monotonic()
    proc = cli.run(*args, check=False, timeout=120)
    elapsed = time.monotonic() - started
    said = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"aios {' '.join(args)} did not fail:\n{said}"
    assert elapsed < FAILS_WITHIN_S, f"aios {' '.join(args)} took {elapsed:.1f} s to fail:\n{said}"
    return said


@pytest.mark.parametrize("command", [("topics", "create"), ("worker", "orchestrator"), ("worker", "agents"),
                                     ("submit", "hello"), ("tail", "results")])
def test_a_wrong_password_fails_at_start_naming_the_setting(broker: SecureBroker, tmp_path: Path,
                                                             command: tuple[str, ...]) -> None:
    cli = Cli(sasl_env(broker, tmp_path, _prefix(), password="not-the-password"))
    said = _fails_fast(cli, *command)
    assert "Kafka refused the SASL login of user 'aios' (SCRAM-SHA-512)" in said, said
    assert "AIOS_KAFKA_SASL_PASSWORD" in said


@pytest.mark.parametrize("listener", ["SASL_SSL", "SSL"])
@pytest.mark.parametrize("command", [("topics", "create"), ("worker", "orchestrator")])
def test_an_untrusted_certificate_fails_at_start_naming_the_setting(broker: SecureBroker, tmp_path: Path,
                                                                    listener: str, command: tuple[str, ...]) -> None:
    make = sasl_env if listener == "SASL_SSL" else tls_env
    cli = Cli(make(broker, tmp_path, _prefix(), cafile=broker.stranger_ca.cert_file))
    said = _fails_fast(cli, *command)
    assert "is not trusted" in said and "AIOS_KAFKA_SSL_CAFILE" in said, said


def test_a_client_without_a_certificate_is_refused_by_the_mutual_tls_listener(broker: SecureBroker,
                                                                              tmp_path: Path) -> None:
    env = tls_env(broker, tmp_path, _prefix())
    del env["AIOS_KAFKA_SSL_CERTFILE"], env["AIOS_KAFKA_SSL_KEYFILE"]
    said = _fails_fast(Cli(env), "topics", "create")
    assert "refused this client's TLS certificate" in said and "AIOS_KAFKA_SSL_CERTFILE" in said, said


def _grant_ingest(broker: SecureBroker, topic: str) -> None:
    acls = [AclBinding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, f"User:{INGEST}", "*", operation,
                       AclPermissionType.ALLOW) for operation in (AclOperation.WRITE, AclOperation.DESCRIBE)]
    admin = _admin(broker)  # kept referenced: its futures fail once the client is collected
    for future in admin.create_acls(acls).values():
        future.result(30)


def _produce_as_ingest(broker: SecureBroker, topic: str, value: bytes) -> None:
    """Produce as the ingest principal, which may write ``topic``. create_acls returns when the
    controller has the grant; the broker enforces it a moment later (it travels as metadata), so
    first wait until the principal may see the topic (DESCRIBE, granted with WRITE), then produce."""
    admin = AdminClient({"bootstrap.servers": broker.sasl_bootstrap, **broker.sasl_config(INGEST, INGEST_PASSWORD)})
    deadline = time.monotonic() + 30
    while True:
        meta = admin.list_topics(topic, timeout=10).topics.get(topic)
        if meta is not None and meta.error is None:
            break
        assert time.monotonic() < deadline, f"the grant on {topic} did not take effect within 30 s: {meta and meta.error}"
        time.sleep(0.5)
    producer = Producer({"bootstrap.servers": broker.sasl_bootstrap, "enable.idempotence": True, "log_level": 0,
                         **broker.sasl_config(INGEST, INGEST_PASSWORD)})
    failed: list[str] = []
    producer.produce(topic, value, on_delivery=lambda e, _m: failed.append(str(e)) if e is not None else None)
    assert producer.flush(30) == 0 and not failed, failed


def test_a_principal_that_may_only_produce_json_tasks_cannot_read_results(broker: SecureBroker,
                                                                           tmp_path: Path) -> None:
    prefix = _prefix()
    Cli(sasl_env(broker, tmp_path, prefix)).run("topics", "create")
    _grant_ingest(broker, f"{prefix}.tasks-json")
    ingest = Cli(sasl_env(broker, tmp_path, prefix, user=INGEST, password=INGEST_PASSWORD))

    # Allowed: a JSON task onto <prefix>.tasks-json.
    _produce_as_ingest(broker, f"{prefix}.tasks-json", b'{"description": "allowed"}')

    # Refused: reading results, through the CLI and through a plain consumer.
    said = _fails_fast(ingest, "tail", "results", "--from-beginning")
    assert f"User:{INGEST} may not read topic {prefix}.results" in said, said
    assert "TOPIC_AUTHORIZATION_FAILED" in said
    consumer = Consumer({"bootstrap.servers": broker.sasl_bootstrap, "group.id": f"{prefix}-snoop", "log_level": 0,
                         "auto.offset.reset": "earliest", **broker.sasl_config(INGEST, INGEST_PASSWORD)})
    consumer.subscribe([f"{prefix}.results"])
    try:
        codes = set()
        deadline = time.monotonic() + 30
        while not codes & {KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED} \
                and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None:
                assert msg.error() is not None, "the ingest principal read a result"
                codes.add(msg.error().code())
        assert codes & {KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED}, codes
    finally:
        consumer.close()
    # Refused: producing Avro tasks to <prefix>.tasks, past the JSON bridge's validation.
    # The live-agent check reads the agents topic first, which this principal may not either.
    said = _fails_fast(ingest, "submit", "not allowed")
    assert f"User:{INGEST} may not read topic {prefix}.agents" in said and "--anyway" in said, said
    said = _fails_fast(ingest, "submit", "--anyway", "not allowed")
    assert f"User:{INGEST} may not write to topic {prefix}.tasks" in said, said
