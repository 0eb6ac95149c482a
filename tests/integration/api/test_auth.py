"""Authentication: API keys (salted hashes in Redis, created and revoked by `aios keys`) and JWT bearer
tokens checked against a local JWKS (issuer, audience, expiry, rotation). Health stays open."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import redis
from click.testing import CliRunner, Result

from aios.cli import cli
from aios.streams.settings import Settings
from tests.fakes.jwks_server import JwksServer, SigningKey
from tests.integration.api.helpers import api_client, key_headers

pytestmark = pytest.mark.integration

READS = ["/v1/projects", "/v1/projects/p", "/v1/projects/p/results", "/v1/tasks/t", "/v1/agents", "/v1/stats"]


async def test_every_route_but_health_needs_credentials(settings: Settings) -> None:
    async with api_client(settings) as api:
        for path in READS:
            r = await api.get(path)
            assert r.status_code == 401, path
            assert r.headers["www-authenticate"] == "Bearer"
        for path, body in [("/v1/tasks", {"description": "x"}), ("/v1/projects", {"project": "p", "goal": "g"}),
                           ("/v1/tasks/t/approve", None), ("/v1/tasks/t/cancel", None),
                           ("/v1/tasks/t/reject", {"reason": "r"})]:
            assert (await api.post(path, json=body)).status_code == 401, path
        assert (await api.get("/healthz")).status_code == 200
        assert (await api.get("/readyz")).status_code == 200
        garbage = await api.get("/v1/agents", headers={"Authorization": "Bearer aios_0123456789abcdef_" + "x" * 43})
        assert garbage.status_code == 401 and garbage.json()["detail"] == "invalid or revoked API key"
        jwt_off = await api.get("/v1/agents", headers={"Authorization": "Bearer eyJhbGciOi.e30.sig"})
        assert jwt_off.status_code == 401 and "AIOS_API_JWKS_URL" in jwt_off.json()["detail"]


async def test_api_keys_are_stored_as_salted_hashes_and_revocation_is_immediate(settings: Settings) -> None:
    async with api_client(settings) as api:
        headers = await key_headers(api, "viewer", ("p",))
        assert (await api.get("/v1/agents", headers=headers)).status_code == 200
        key = headers["Authorization"].removeprefix("Bearer ")
        key_id, secret = key.split("_")[1], key.split("_", 2)[2]
        stored = redis.Redis.from_url(settings.stores.redis_url).hgetall(f"{settings.kafka.topic_prefix}:apikey:{key_id}")
        assert set(stored) == {b"salt", b"hash", b"role", b"projects", b"name", b"created_at", b"revoked"}
        assert all(secret.encode() not in v for v in stored.values())
        tampered = {"Authorization": f"Bearer aios_{key_id}_{secret[:-2]}AA"}
        assert (await api.get("/v1/agents", headers=tampered)).status_code == 401
        await api.app_state.services.keys.revoke(key_id)  # type: ignore[attr-defined]
        assert (await api.get("/v1/agents", headers=headers)).status_code == 401


async def test_aios_keys_create_list_revoke(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIOS_TOPIC_PREFIX", settings.kafka.topic_prefix)
    def aios(*args: str) -> Result:  # the CLI runs its own event loop: keep it off the test's
        return CliRunner().invoke(cli, list(args))

    async def run(*args: str) -> Result:
        return await asyncio.to_thread(aios, *args)

    created = await run("keys", "create", "--role", "submitter", "--project", "a", "--json")
    assert created.exit_code == 0, created.output
    doc = json.loads(created.output.splitlines()[-1])
    assert doc["role"] == "submitter" and doc["projects"] == ["a"] and doc["key"].startswith(f"aios_{doc['id']}_")
    listed = json.loads((await run("keys", "list", "--json")).output.splitlines()[-1])
    assert listed == {"keys": [{k: v for k, v in doc.items() if k != "key"}]}
    assert doc["key"] not in (await run("keys", "list")).output
    async with api_client(settings) as api:
        auth = {"Authorization": f"Bearer {doc['key']}"}
        assert (await api.get("/v1/projects", headers=auth)).status_code == 200
        revoked = await run("keys", "revoke", doc["id"], "--json")
        assert revoked.exit_code == 0 and json.loads(revoked.output.splitlines()[-1])["revoked"] is True
        assert (await api.get("/v1/projects", headers=auth)).status_code == 401
    unknown = await run("keys", "revoke", "feedfacefeedface")
    assert unknown.exit_code != 0 and "aios keys list" in unknown.output
    bad_role = await run("keys", "create", "--role", "root", "--project", "*")
    assert bad_role.exit_code != 0 and "root" in bad_role.output


async def test_jwt_bearer_tokens_are_checked_against_the_jwks_and_follow_key_rotation(settings: Settings) -> None:
    with JwksServer() as idp:
        s = settings.replace(api_jwks_url=idp.url, api_jwt_issuer=idp.issuer,
                                        api_jwt_audience=idp.audience, api_jwks_refetch_cooldown_s=0.0)
        async with api_client(s) as api:
            async def status(token: str) -> httpx.Response:
                return await api.get("/v1/projects", headers={"Authorization": f"Bearer {token}"})

            assert (await status(idp.token())).status_code == 200
            for bad, why in [(idp.token(aud="other"), "audience"), (idp.token(iss="https://evil/"), "issuer"),
                             (idp.token(ttl_s=-60), "expired"), (idp.token(SigningKey()), "kid")]:
                r = await status(bad)
                assert r.status_code == 401, why
                assert r.json()["detail"].startswith("invalid bearer token"), r.text
            assert (await status(idp.token(aios_role="root"))).status_code == 403
            assert (await status(idp.token(aios_projects=[]))).status_code == 403
            fetches = idp.fetches
            old = idp.keys[0]
            new = idp.rotate()
            # A token signed by the new key names a kid the cache lacks: the JWKS is fetched again.
            assert (await status(idp.token(new))).status_code == 200
            assert idp.fetches > fetches
            assert (await status(idp.token(old))).status_code == 401
