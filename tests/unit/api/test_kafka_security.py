"""Kafka SASL/SSL settings reach every client: confluent-kafka producers, consumers and admin, and faust.

These prove the settings arrive in each client's configuration; tests/e2e/test_kafka_security.py runs
the pipeline over a real broker's TLS and SASL_SSL listeners.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import faust
import pytest
from faust.types.auth import AuthProtocol, SASLMechanism

from aios.schemas.errors import ConfigError
from aios.streams.engine.app import faust_credentials
from aios.streams.kafka import consumer_config, producer_config
from aios.streams.kafka_access import KafkaAccessError
from aios.streams.pipeline import build_app
from aios.streams.settings import load_settings

SCRAM = {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "SCRAM-SHA-512",
         "kafka_sasl_username": "aios", "kafka_sasl_password": "s3cret-pw"}


def test_plaintext_adds_nothing() -> None:
    s = load_settings()
    assert s.kafka.security() == {}
    assert "security.protocol" not in producer_config(s)
    assert faust_credentials(s) is None


def test_sasl_scram_reaches_confluent_producer_consumer_and_admin(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings(**SCRAM)
    want = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": "aios", "sasl.password": "s3cret-pw"}
    assert want.items() <= producer_config(s).items()
    assert want.items() <= consumer_config(s, "g").items()
    seen: list[dict[str, object]] = []
    monkeypatch.setattr("aios.streams.topics.AdminClient", lambda conf: seen.append(conf))
    from aios.streams.topics import admin_client

    admin_client(s)
    assert want.items() <= seen[0].items()
    # The password is a SecretStr: it never shows in the settings' repr (and so in logs).
    assert "s3cret-pw" not in repr(s)


def test_sasl_reaches_faust(tmp_path: Path) -> None:
    s = load_settings(data_dir=tmp_path, **SCRAM)
    creds = faust_credentials(s)
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.mechanism is SASLMechanism.SCRAM_SHA_512 and creds.protocol is AuthProtocol.SASL_PLAINTEXT
    assert (creds.username, creds.password) == ("aios", "s3cret-pw")
    app, _ = build_app(s, ["orchestrator"], "sectest")
    used = app.conf.broker_credentials
    assert isinstance(used, faust.SASLCredentials)
    assert (used.username, used.mechanism) == ("aios", SASLMechanism.SCRAM_SHA_512)


def test_sasl_ssl_and_ssl_carry_a_tls_context(tmp_path: Path) -> None:
    s = load_settings(**{**SCRAM, "kafka_security_protocol": "SASL_SSL"})
    creds = faust_credentials(s)
    assert isinstance(creds, faust.SASLCredentials) and creds.protocol is AuthProtocol.SASL_SSL
    assert isinstance(creds.ssl_context, ssl.SSLContext)
    tls = load_settings(kafka_security_protocol="SSL", kafka_ssl_cafile=tmp_path / "ca.pem")
    assert producer_config(tls)["ssl.ca.location"] == str(tmp_path / "ca.pem")
    # A CA file that does not exist is an error at start-up naming the setting, not at first use.
    with pytest.raises(KafkaAccessError, match=r"AIOS_KAFKA_SSL_CAFILE=.*ca.pem is not a readable file"):
        faust_credentials(tls)


def test_a_bad_protocol_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="AIOS_KAFKA_SECURITY_PROTOCOL"):
        load_settings(kafka_security_protocol="KERBEROS")
