"""The start-up access check's pure parts: certificate files, who the process is to ACLs, how a
refusal reads, and hostile bootstrap strings. tests/e2e/test_kafka_security.py runs it against a
real TLS/SASL broker."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaError as CKafkaError
from hypothesis import example, given
from hypothesis import strategies as st

from aios.schemas.errors import ConfigError
from aios.streams.kafka_access import (
    KafkaAccessError,
    _addresses,
    authorization_problem,
    check_access,
    principal,
    tls_context,
)
from aios.streams.metrics import KAFKA_ACCESS_FAILURES
from aios.streams.settings import load_settings


def test_a_missing_certificate_file_names_its_setting(tmp_path: Path) -> None:
    for setting, flat in (("AIOS_KAFKA_SSL_CAFILE", "kafka_ssl_cafile"), ("AIOS_KAFKA_SSL_CERTFILE", "kafka_ssl_certfile"),
                          ("AIOS_KAFKA_SSL_KEYFILE", "kafka_ssl_keyfile")):
        kafka = load_settings(kafka_security_protocol="SSL", **{flat: tmp_path / "nope.pem"}).kafka
        with pytest.raises(KafkaAccessError, match=f"{setting}=.*nope.pem is not a readable file"):
            tls_context(kafka)


def test_a_file_that_is_not_pem_names_its_setting(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(KafkaAccessError, match="AIOS_KAFKA_SSL_CAFILE=.*junk.pem holds no PEM certificate"):
        tls_context(load_settings(kafka_ssl_cafile=junk).kafka)
    with pytest.raises(KafkaAccessError, match="AIOS_KAFKA_SSL_CERTFILE / AIOS_KAFKA_SSL_KEYFILE"):
        tls_context(load_settings(kafka_ssl_certfile=junk, kafka_ssl_keyfile=junk).kafka)


def test_the_access_error_is_a_config_error_too() -> None:
    assert issubclass(KafkaAccessError, ConfigError)


def test_the_principal_follows_the_protocol(tmp_path: Path) -> None:
    assert principal(load_settings().kafka) == "User:ANONYMOUS"
    sasl = load_settings(kafka_security_protocol="SASL_SSL", kafka_sasl_username="ingest").kafka
    assert principal(sasl) == "User:ingest"
    mtls = load_settings(kafka_security_protocol="SSL", kafka_ssl_certfile=tmp_path / "c.pem").kafka
    assert principal(mtls).startswith("the subject of AIOS_KAFKA_SSL_CERTFILE=")


@pytest.mark.parametrize(("code", "kind"), [(CKafkaError.TOPIC_AUTHORIZATION_FAILED, "topic"),
                                            (CKafkaError.GROUP_AUTHORIZATION_FAILED, "consumer group"),
                                            (CKafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, "transactional id"),
                                            (CKafkaError.CLUSTER_AUTHORIZATION_FAILED, "cluster")])
def test_an_acl_refusal_names_the_principal_and_the_resource(code: int, kind: str) -> None:
    kafka = load_settings(kafka_security_protocol="SASL_SSL", kafka_sasl_username="ingest").kafka
    before = KAFKA_ACCESS_FAILURES.labels("authorization")._value.get()
    problem = authorization_problem(kafka, CKafkaError(code), "aios.results", "read")
    assert problem is not None
    assert f"User:ingest may not read {kind} aios.results" in str(problem)
    assert KAFKA_ACCESS_FAILURES.labels("authorization")._value.get() == before + 1


def test_other_errors_are_not_called_refusals() -> None:
    kafka = load_settings().kafka
    assert authorization_problem(kafka, CKafkaError(CKafkaError._TRANSPORT), "t", "read") is None
    assert authorization_problem(kafka, CKafkaError(CKafkaError.NOT_LEADER_FOR_PARTITION), "t", "read") is None


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL"])
def test_nothing_listening_fails_after_the_connect_timeout_naming_the_address(protocol: str) -> None:
    port = _closed_port()
    settings = load_settings(kafka_bootstrap=f"127.0.0.1:{port}", kafka_security_protocol=protocol,
                             kafka_connect_timeout_s=1.5)
    started = time.monotonic()
    with pytest.raises(KafkaAccessError, match=f"AIOS_KAFKA_BOOTSTRAP=127.0.0.1:{port}"):
        check_access(settings)
    assert time.monotonic() - started < 10


def test_a_plaintext_listener_is_not_mistaken_for_tls() -> None:
    """A TLS client that reaches a listener speaking something else fails the handshake, at once."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        import threading

        def answer_garbage() -> None:
            conn, _ = server.accept()
            with conn:
                conn.recv(1024)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        threading.Thread(target=answer_garbage, daemon=True).start()
        settings = load_settings(kafka_bootstrap=f"127.0.0.1:{port}", kafka_security_protocol="SSL",
                                 kafka_connect_timeout_s=10)
        with pytest.raises(KafkaAccessError, match="no TLS handshake with 127.0.0.1:.*AIOS_KAFKA_SECURITY_PROTOCOL"):
            check_access(settings)


@given(st.text(max_size=200))
@example(":²")  # a digit to str.isdigit(), not to int()
def test_any_bootstrap_string_parses_to_addresses_or_nothing(bootstrap: str) -> None:
    kafka = load_settings().kafka.model_copy(update={"bootstrap": bootstrap})
    for host, port in _addresses(kafka):
        assert isinstance(host, str) and 0 <= port
