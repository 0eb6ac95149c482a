"""Hardening: per-key rate limits (429 + Retry-After), body limits (413), security headers, CORS from
settings, TLS, and no secret in the logs."""

from __future__ import annotations

import datetime as dt
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from aios.api.server import uvicorn_config
from aios.schemas.errors import ConfigError
from aios.streams.settings import Settings
from tests.fakes.jwks_server import JwksServer
from tests.integration.api.helpers import api_client, key_headers

pytestmark = pytest.mark.integration


async def test_rate_limit_per_key_answers_429_with_retry_after(settings: Settings) -> None:
    s = settings.replace(api_rate_per_s=0.5, api_rate_burst=3)
    async with api_client(s) as api:
        first, second = await key_headers(api), await key_headers(api)
        codes = [(await api.get("/v1/agents", headers=first)).status_code for _ in range(3)]
        assert codes == [200, 200, 200]
        limited = await api.get("/v1/agents", headers=first)
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 2 and "rate limit" in limited.json()["detail"]
        assert (await api.get("/v1/agents", headers=second)).status_code == 200  # buckets are per key


async def test_request_bodies_over_the_limit_get_413(settings: Settings) -> None:
    s = settings.replace(api_max_body_bytes=2048)
    async with api_client(s) as api:
        headers = await key_headers(api)
        big = {"description": "x" * 5000}
        r = await api.post("/v1/tasks", json=big, headers=headers)
        assert r.status_code == 413 and "AIOS_API_MAX_BODY_BYTES" in r.json()["detail"]

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams in
            yield b'{"description": "'
            for _ in range(10):
                yield b"y" * 500
            yield b'"}'
        chunked = await api.post("/v1/tasks", content=chunks(),
                                 headers={**headers, "Content-Type": "application/json"})
        assert chunked.status_code == 413
        assert (await api.post("/v1/tasks", json={"description": "small"}, headers=headers)).status_code == 202


async def test_a_query_parameter_given_twice_is_refused_with_its_name(settings: Settings) -> None:
    # The schema fuzzer found /v1/kafka/lag?group=a&group=b answered 200 (FastAPI kept the last);
    # tests/unit/api/test_query_values.py runs the middleware on generated queries.
    async with api_client(settings) as api:
        headers = await key_headers(api)
        r = await api.get("/v1/kafka/lag", params=[("group", "a"), ("group", "b")], headers=headers)
        assert r.status_code == 400 and "query parameter 'group' given 2 times" in r.json()["detail"]
        assert (await api.get("/v1/kafka/lag", params={"group": "a"}, headers=headers)).status_code == 200


async def test_security_headers_and_cors_from_settings(settings: Settings) -> None:
    s = settings.replace(api_cors_origins=("https://dash.example",))
    async with api_client(s) as api:
        headers = await key_headers(api)
        r = await api.get("/v1/projects", headers={**headers, "Origin": "https://dash.example"})
        assert r.headers["access-control-allow-origin"] == "https://dash.example"
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert r.headers["cache-control"] == "no-store" and "strict-transport-security" not in r.headers
        other = await api.get("/v1/projects", headers={**headers, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        preflight = await api.options("/v1/tasks", headers={"Origin": "https://dash.example",
                                                            "Access-Control-Request-Method": "POST",
                                                            "Access-Control-Request-Headers": "authorization"})
        assert preflight.status_code == 200 and "POST" in preflight.headers["access-control-allow-methods"]
        unauthenticated = await api.get("/v1/projects")
        assert unauthenticated.status_code == 401 and unauthenticated.headers["x-frame-options"] == "DENY"


async def test_secrets_never_reach_the_logs(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with JwksServer() as idp:
        s = settings.replace(api_jwks_url=idp.url, api_jwt_issuer=idp.issuer,
                                        api_jwt_audience=idp.audience)
        token, expired = idp.token(), idp.token(ttl_s=-60)
        async with api_client(s) as api:
            headers = await key_headers(api, "admin")
            key = headers["Authorization"].split()[1]
            created = (await api.post("/v1/keys", json={"role": "viewer", "projects": ["*"]}, headers=headers)).json()
            for auth in (key, key[:-3] + "abc", token, expired, created["key"], "garbage"):
                await api.get("/v1/projects", headers={"Authorization": f"Bearer {auth}"})
                await api.post("/v1/tasks", json={"description": auth}, headers={"Authorization": f"Bearer {auth}"})
    assert caplog.records, "nothing was logged at all: the assertion below would prove nothing"
    for secret in (key, key.split("_", 2)[2], token, expired, created["key"]):
        assert secret not in caplog.text


def self_signed(tmp: Path) -> tuple[Path, Path]:
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    import ipaddress

    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(private, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return cert_path, key_path


async def test_tls_serves_https_with_hsts(settings: Settings, tmp_path: Path) -> None:
    import httpx

    from aios.api.server import serve_embedded

    cert, key = self_signed(tmp_path)
    s = settings.replace(api_tls_certfile=cert, api_tls_keyfile=key, api_port=0)
    server, task = await serve_embedded(s)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        context = ssl.create_default_context(cafile=str(cert))
        async with httpx.AsyncClient(verify=context) as client:
            r = await client.get(f"https://127.0.0.1:{port}/healthz")
            assert r.status_code == 200 and r.headers["strict-transport-security"].startswith("max-age=")
    finally:
        server.should_exit = True
        await task
    with pytest.raises(ConfigError, match="both"):
        uvicorn_config(settings.replace(api_tls_certfile=cert))
    with pytest.raises(ConfigError, match="does not exist"):
        uvicorn_config(settings.replace(api_tls_certfile=cert, api_tls_keyfile=tmp_path / "nope"))


async def test_requests_are_counted_by_route_template(settings: Settings) -> None:
    from prometheus_client import REGISTRY

    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    route = {"method": "GET", "route": "/v1/tasks/{task_id}"}
    before = (value("aios_api_requests_total", **route, status="404"),
              value("aios_api_auth_failures_total", status="401"),
              value("aios_api_request_seconds_count", **route))
    async with api_client(settings, as_admin=True) as api:
        for i in range(3):
            assert (await api.get(f"/v1/tasks/missing-{i}")).status_code == 404
        assert (await api.get("/v1/tasks/x", headers={"Authorization": "Bearer nope"})).status_code == 401
    after = (value("aios_api_requests_total", **route, status="404"),
             value("aios_api_auth_failures_total", status="401"),
             value("aios_api_request_seconds_count", **route))
    assert (after[0] - before[0], after[1] - before[1], after[2] - before[2]) == (3, 1, 3)
