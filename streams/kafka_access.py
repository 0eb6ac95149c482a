"""Whether this process can reach Kafka with its security settings, checked when it starts its clients.

A refused password, an untrusted certificate or a missing ACL then fails at once, with an error that
names the setting to fix, instead of clients that retry forever (librdkafka and aiokafka both do).

TLS is checked first, from Python: a TCP connection, the handshake with the context every client
uses (:func:`tls_context`), and one ApiVersions request, so the failure's kind comes from typed
``ssl`` exceptions: an untrusted broker certificate fails the handshake's verification, a client
certificate the broker refuses fails the first read after it. SASL is checked by librdkafka itself:
a metadata request whose authentication errors arrive, coded, at the client's error callback.
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
from typing import Any

from confluent_kafka import KafkaError as CKafkaError
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from aios.schemas.errors import ConfigError
from aios.streams.errors import KafkaError
from aios.streams.metrics import KAFKA_ACCESS_FAILURES
from aios.streams.settings import KafkaSettings, Settings


class KafkaAccessError(KafkaError, ConfigError):
    """Kafka refused this process (credentials, certificates, ACLs) or never answered; the message
    names the setting to fix."""


def tls_context(kafka: KafkaSettings) -> ssl.SSLContext:
    """The TLS context of every Python Kafka client (faust's, this module's): the CA bundle of
    AIOS_KAFKA_SSL_CAFILE (the system's when unset) and the client certificate, if any."""
    for setting, path in (("AIOS_KAFKA_SSL_CAFILE", kafka.ssl_cafile), ("AIOS_KAFKA_SSL_CERTFILE", kafka.ssl_certfile),
                          ("AIOS_KAFKA_SSL_KEYFILE", kafka.ssl_keyfile)):
        if path is not None and not path.is_file():
            raise _failed("tls-files", f"{setting}={path} is not a readable file: point it at the PEM file")
    try:
        context = ssl.create_default_context(cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None)
    except ssl.SSLError as exc:
        raise _failed("tls-files", f"AIOS_KAFKA_SSL_CAFILE={kafka.ssl_cafile} holds no PEM certificate: {exc}") from exc
    if kafka.ssl_certfile is not None:
        try:
            context.load_cert_chain(str(kafka.ssl_certfile), str(kafka.ssl_keyfile) if kafka.ssl_keyfile else None)
        except ssl.SSLError as exc:
            raise _failed("tls-files", f"AIOS_KAFKA_SSL_CERTFILE / AIOS_KAFKA_SSL_KEYFILE do not hold a PEM "
                                       f"certificate and its private key: {exc}") from exc
    return context


def check_access(settings: Settings, timeout_s: float | None = None) -> int:
    """Reach the cluster as this process's clients will; returns how many brokers are up. Raises
    :class:`KafkaAccessError` naming the setting when TLS, SASL or the address is wrong."""
    kafka = settings.kafka
    deadline = time.monotonic() + (timeout_s if timeout_s is not None else kafka.connect_timeout_s)
    if kafka.security_protocol.endswith("SSL"):
        _check_tls(kafka, deadline)
    return _check_metadata(kafka, deadline)


def _addresses(kafka: KafkaSettings) -> list[tuple[str, int]]:
    out = []
    for address in kafka.bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        # isascii too: str.isdigit() takes '²' and other digits int() refuses.
        if port.isascii() and port.isdigit():
            out.append((host.strip("[]"), int(port)))
    return out


def _check_tls(kafka: KafkaSettings, deadline: float) -> None:
    context = tls_context(kafka)
    unreachable: dict[str, str] = {}
    while time.monotonic() < deadline:
        for host, port in _addresses(kafka):
            try:
                _api_versions_over_tls(context, host, port, max(0.5, min(5.0, deadline - time.monotonic())),
                                       sasl=kafka.security_protocol == "SASL_SSL")
                return
            except _WantsSasl as exc:
                raise _failed("tls-handshake", (
                    f"the broker at {host}:{port} closed the connection on a request without SASL: it is a "
                    "SASL_SSL listener; set AIOS_KAFKA_SECURITY_PROTOCOL=SASL_SSL with AIOS_KAFKA_SASL_MECHANISM, "
                    "AIOS_KAFKA_SASL_USERNAME and AIOS_KAFKA_SASL_PASSWORD, or use its SSL listener")) from exc
            except ssl.SSLCertVerificationError as exc:
                raise _failed("tls-untrusted", (
                    f"the certificate of the broker at {host}:{port} is not trusted ({exc.verify_message}): set "
                    "AIOS_KAFKA_SSL_CAFILE to the CA bundle that signed the brokers' certificates"
                    + (f" (now {kafka.ssl_cafile})" if kafka.ssl_cafile else " (unset: the system's CAs)"))) from exc
            except _RefusedAfterHandshake as exc:
                raise _failed("tls-client-cert", (
                    f"the broker at {host}:{port} refused this client's TLS certificate ({exc.reason}): "
                    + ("set AIOS_KAFKA_SSL_CERTFILE and AIOS_KAFKA_SSL_KEYFILE to a certificate its CA signed"
                       if kafka.ssl_certfile is None else
                       f"AIOS_KAFKA_SSL_CERTFILE={kafka.ssl_certfile} is not signed by a CA the broker trusts"))) from exc
            except ssl.SSLError as exc:
                raise _failed("tls-handshake", (
                    f"no TLS handshake with {host}:{port} ({exc.reason}): check that AIOS_KAFKA_BOOTSTRAP names "
                    f"the brokers' {kafka.security_protocol} listener and AIOS_KAFKA_SECURITY_PROTOCOL matches "
                    "it")) from exc
            except OSError as exc:
                unreachable[f"{host}:{port}"] = str(exc)
        time.sleep(0.5)
    why = "; ".join(f"{address}: {err}" for address, err in unreachable.items())
    raise _failed("unreachable", f"no broker of AIOS_KAFKA_BOOTSTRAP={kafka.bootstrap} answered ({why}): "
                                 "is Kafka up at that address?")


class _RefusedAfterHandshake(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _api_versions_over_tls(context: ssl.SSLContext, host: str, port: int, timeout_s: float, *,
                           sasl: bool) -> None:
    """Handshake, then one ApiVersions request (allowed before SASL) and, without SASL, one
    Metadata request (refused, by a closed connection, on a listener that wants SASL). With TLS 1.3
    the client's handshake ends before the broker has checked the client's certificate: a refusal
    is the first thing read after it."""
    with socket.create_connection((host, port), timeout=timeout_s) as raw, \
            context.wrap_socket(raw, server_hostname=host) as tls:
        try:
            _request(tls, api_key=18, version=0, body=b"")  # ApiVersions v0
        except ssl.SSLError as exc:
            raise _RefusedAfterHandshake(str(exc.reason)) from exc
        if not sasl:
            try:
                _request(tls, api_key=3, version=1, body=struct.pack(">i", 0))  # Metadata v1, no topics
            except (ssl.SSLError, ConnectionError) as exc:
                raise _WantsSasl() from exc


class _WantsSasl(Exception):
    pass


def _request(tls: ssl.SSLSocket, *, api_key: int, version: int, body: bytes) -> None:
    """Send one request and read its whole answer; a closed connection is a ConnectionError."""
    client_id = b"aios-access-check"
    request = struct.pack(">hhih", api_key, version, api_key, len(client_id)) + client_id + body
    tls.sendall(struct.pack(">i", len(request)) + request)
    size = struct.unpack(">i", _read(tls, 4))[0]
    _read(tls, size)


def _read(tls: ssl.SSLSocket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = tls.recv(count - len(data))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        data += chunk
    return data


def _check_metadata(kafka: KafkaSettings, deadline: float) -> int:
    errors: list[CKafkaError] = []
    config: dict[str, Any] = {"bootstrap.servers": kafka.bootstrap, "error_cb": errors.append, "log_level": 0,
                              **kafka.security()}
    admin = AdminClient(config)
    last: str = "no answer"
    while True:
        try:
            return len(admin.list_topics(timeout=max(0.2, min(1.0, deadline - time.monotonic()))).brokers)
        except KafkaException as exc:
            last = str(exc.args[0]) if exc.args else str(exc)
        admin.poll(0)
        for err in errors:
            if err.code() == CKafkaError._AUTHENTICATION:
                raise _failed("sasl", (
                    f"Kafka refused the SASL login of user {kafka.sasl_username!r} ({kafka.sasl_mechanism or 'PLAIN'}): "
                    "check AIOS_KAFKA_SASL_USERNAME and AIOS_KAFKA_SASL_PASSWORD (and AIOS_KAFKA_SASL_MECHANISM)"))
            if err.code() == CKafkaError._SSL:
                raise _failed("tls-untrusted", (
                    f"TLS with Kafka failed ({err.str()}): check AIOS_KAFKA_SSL_CAFILE and the client certificate"))
        if time.monotonic() >= deadline:
            raise _failed("unreachable", (
                f"Kafka at AIOS_KAFKA_BOOTSTRAP={kafka.bootstrap} did not answer ({last}; "
                f"{errors[-1].str() if errors else 'no error reported'}): is it up, and does "
                f"AIOS_KAFKA_SECURITY_PROTOCOL={kafka.security_protocol} match its listener?"))


def _failed(reason: str, message: str) -> KafkaAccessError:
    KAFKA_ACCESS_FAILURES.labels(reason).inc()
    return KafkaAccessError(message)


_AUTHORIZATION = {
    CKafkaError.TOPIC_AUTHORIZATION_FAILED: "topic",
    CKafkaError.GROUP_AUTHORIZATION_FAILED: "consumer group",
    CKafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED: "transactional id",
    CKafkaError.CLUSTER_AUTHORIZATION_FAILED: "cluster",
}


def principal(kafka: KafkaSettings) -> str:
    """Who this process is to the brokers' ACLs, as far as its settings tell."""
    if kafka.security_protocol.startswith("SASL"):
        return f"User:{kafka.sasl_username}"
    if kafka.ssl_certfile is not None:
        return f"the subject of AIOS_KAFKA_SSL_CERTFILE={kafka.ssl_certfile}"
    return "User:ANONYMOUS"


def authorization_problem(kafka: KafkaSettings, err: CKafkaError, resource: str, action: str) -> KafkaAccessError | None:
    """A clear error for an ACL refusal (``action`` on ``resource``), or None for other errors."""
    kind = _AUTHORIZATION.get(err.code())
    if kind is None:
        return None
    return _failed("authorization", (
        f"{principal(kafka)} may not {action} {kind} {resource} (Kafka ACLs refused it: {err.name()}): grant it, "
        "or run with credentials that have it (AIOS_KAFKA_SASL_USERNAME / AIOS_KAFKA_SSL_CERTFILE)"))
