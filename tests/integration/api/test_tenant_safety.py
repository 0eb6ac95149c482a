"""The API between tenants: JWTs only with an issuer and an audience, WebSockets capped per key and
closed when their key is revoked or their token expires, rate limits charged only to checked
secrets, a live view whose limits are per project, sealed restricted content, and no internals for
callers without a credential."""

from __future__ import annotations

import asyncio
import time
import uuid

import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from aios.api.app import create_app
from aios.connectors.errors import StoreUnavailableError
from aios.connectors.history import HistoryStore
from aios.schemas.errors import ConfigError
from aios.schemas.sealed import SEALED_PREFIX, new_key
from aios.streams.kafka import EventProducer
from aios.streams.readmodels.task_client import build_task, latest_by
from aios.streams.settings import Settings, load_settings
from aios.streams.topics import Topics
from tests.fakes.jwks_server import JwksServer
from tests.integration.api.helpers import api_client, key_headers, poll
from tests.integration.api.test_stream import ws_url

pytestmark = pytest.mark.integration


def token_of(headers: dict[str, str]) -> str:
    return headers["Authorization"].split()[1]


async def closed_with(ws: object, timeout_s: float) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(timeout_s):
            while True:
                await ws.recv()  # type: ignore[attr-defined]
    frame = closed.value.rcvd
    assert frame is not None
    return frame.code, frame.reason


def test_jwt_auth_refuses_to_start_without_an_issuer_and_an_audience(settings: Settings) -> None:
    for missing, given in [("AIOS_API_JWT_ISSUER and AIOS_API_JWT_AUDIENCE", {}),
                           ("AIOS_API_JWT_AUDIENCE", {"api_jwt_issuer": "https://idp/"}),
                           ("AIOS_API_JWT_ISSUER", {"api_jwt_audience": "aios"})]:
        with pytest.raises(ConfigError, match=missing):
            load_settings(api_jwks_url="http://127.0.0.1:1/jwks.json", **given)
    with pytest.raises(ConfigError):
        create_app(settings.replace(api_jwks_url="http://127.0.0.1:1/jwks.json"))


async def test_a_token_without_issuer_or_audience_claims_is_refused(settings: Settings) -> None:
    with JwksServer() as idp:
        s = settings.replace(api_jwks_url=idp.url, api_jwt_issuer=idp.issuer, api_jwt_audience=idp.audience)
        key = idp.keys[0]
        now = int(time.time())
        base = {"sub": "u", "exp": now + 60, "aios_role": "viewer", "aios_projects": ["*"]}
        async with api_client(s) as api:
            for claims in ({**base, "aud": idp.audience}, {**base, "iss": idp.issuer}):
                token = jwt.encode(claims, key.private, algorithm="RS256", headers={"kid": key.kid})
                r = await api.get("/v1/projects", headers={"Authorization": f"Bearer {token}"})
                assert r.status_code == 401 and "invalid bearer token" in r.json()["detail"]


async def test_websocket_connections_are_capped_per_key(settings: Settings) -> None:
    async with api_client(settings.replace(api_ws_per_key=2)) as api:
        first, other = token_of(await key_headers(api, "viewer", ("P",))), token_of(await key_headers(api))
        url = ws_url(api, f"project=P&types=tasks&access_token={first}")
        async with connect(url), connect(url):
            await asyncio.sleep(0.3)
            async with connect(url) as third:
                code, reason = await closed_with(third, 10)
            assert code == 4429 and "AIOS_API_WS_PER_KEY" in reason
            async with connect(ws_url(api, f"types=tasks&access_token={other}")) as unrelated:
                with pytest.raises(TimeoutError):  # another key is not affected: it stays open
                    await closed_with(unrelated, 1.0)
        await asyncio.sleep(0.5)  # both closed: the key's count is back to zero
        async with connect(url), connect(url) as again:
            with pytest.raises(TimeoutError):
                await closed_with(again, 1.0)
        assert api.app_state.services.hub.per_key == {}  # type: ignore[attr-defined]


async def test_a_websocket_is_closed_when_its_key_is_revoked(settings: Settings) -> None:
    async with api_client(settings.replace(api_ws_recheck_s=0.5)) as api:
        admin = await key_headers(api)
        viewer = await key_headers(api, "viewer", ("P",))
        key_id = token_of(viewer).split("_")[1]
        async with connect(ws_url(api, f"project=P&types=tasks&access_token={token_of(viewer)}")) as ws:
            await asyncio.sleep(0.3)
            assert (await api.delete(f"/v1/keys/{key_id}", headers=admin)).status_code == 200
            started = time.monotonic()
            code, reason = await closed_with(ws, 5)
        assert (code, reason) == (4401, "API key revoked") and time.monotonic() - started < 2


async def test_a_websocket_is_closed_when_its_token_expires(settings: Settings) -> None:
    with JwksServer() as idp:
        s = settings.replace(api_jwks_url=idp.url, api_jwt_issuer=idp.issuer, api_jwt_audience=idp.audience)
        async with api_client(s) as api:
            token = idp.token(ttl_s=2)
            async with connect(ws_url(api, f"types=tasks&access_token={token}")) as ws:
                code, reason = await closed_with(ws, 10)
            assert (code, reason) == (4401, "token expired")


async def test_a_wrong_secret_never_drains_a_real_keys_bucket(settings: Settings) -> None:
    async with api_client(settings.replace(api_rate_burst=3, api_rate_per_s=0.01)) as api:
        real = await key_headers(api, "viewer", ("P",))
        key_id = token_of(real).split("_")[1]
        forged = {"Authorization": f"Bearer aios_{key_id}_{'x' * 43}"}
        for _ in range(20):  # far past the burst, with the real key's id and a wrong secret
            assert (await api.get("/v1/projects", headers=forged)).status_code == 401
        redis = api.app_state.services.redis  # type: ignore[attr-defined]
        assert await redis.exists(f"{settings.kafka.topic_prefix}:ratelimit:key:{key_id}") == 0
        assert [(await api.get("/v1/projects", headers=real)).status_code for _ in range(4)] == [200, 200, 200, 429]


async def test_one_projects_traffic_never_evicts_anothers_tasks_from_the_live_view(settings: Settings) -> None:
    s = settings.replace(api_view_tasks_per_project=20, api_view_tasks=60)
    producer = EventProducer(s)
    tasks = Topics.from_settings(s).tasks
    victim = [build_task(f"victim task {i}", project="victim") for i in range(3)]
    for task in victim:
        producer.send(tasks, "Task", task, key="victim")
    for i in range(500):
        flood = build_task(f"flood {i}", project=f"flood-{i % 5}")
        producer.send(tasks, "Task", flood, key=flood["project_id"])
    producer.flush()
    async with api_client(s, as_admin=True) as api:
        for task in victim:
            r = await api.get(f"/v1/tasks/{task['task_id']}")
            assert r.status_code == 200 and r.json()["project_id"] == "victim"
        view = api.app_state.services.view  # type: ignore[attr-defined]
        assert view._state.tasks.size == 60 and len(view.project_tasks("flood-0")) <= 20


async def test_restricted_tasks_are_sealed_by_the_api_and_opened_for_readers(settings: Settings) -> None:
    ring = f"k1:{new_key()}"
    s = settings.replace(encryption_key=ring)
    async with api_client(s, as_admin=True) as api:
        r = await api.post("/v1/tasks", json={"description": "the merger terms", "project": "deal",
                                              "privacy": "restricted"})
        assert r.status_code == 202
        task_id = r.json()["task_id"]
        seen = await poll(lambda: api.get(f"/v1/tasks/{task_id}"), lambda r: r.status_code == 200)
        assert seen.json()["description"] == "the merger terms" and seen.json()["sealed"] is False
    raw = latest_by(s, Topics.from_settings(s).tasks, "task_id", timeout_s=2)[task_id]  # as Kafka holds it
    assert raw["description"].startswith(SEALED_PREFIX)
    async with api_client(settings.replace(encryption_key=None), as_admin=True) as keyless:
        seen = await poll(lambda: keyless.get(f"/v1/tasks/{task_id}"), lambda r: r.status_code == 200)
        assert seen.json()["sealed"] is True and seen.json()["description"].startswith(SEALED_PREFIX)


class BrokenStore:
    """A history store whose every query fails, naming an internal path."""

    engine = "chdb"

    def query(self, sql: str) -> list[dict[str, object]]:
        raise StoreUnavailableError("chdb data directory /srv/aios-internal/chdb is locked by pid 4242")

    def close(self) -> None:
        pass


async def test_readyz_and_the_dashboard_show_no_internals_without_a_credential(settings: Settings) -> None:
    def broken() -> HistoryStore:
        return BrokenStore()  # type: ignore[return-value]

    async with api_client(settings, store=broken) as api:
        anonymous = await api.get("/readyz")
        viewer = await api.get("/readyz", headers=await key_headers(api, "viewer", ("P",)))
        operator = await api.get("/readyz", headers=await key_headers(api, "operator", ("*",)))
        assert anonymous.status_code == viewer.status_code == operator.status_code == 503
        for r in (anonymous, viewer):
            assert r.json()["checks"]["store"] == "unavailable" and "/srv" not in r.text
        assert "/srv/aios-internal/chdb" in operator.json()["checks"]["store"]
        wrong = await api.get("/readyz", headers={"Authorization": f"Bearer aios_{uuid.uuid4().hex[:16]}_{'y' * 43}"})
        assert "/srv" not in wrong.text
        # The dashboard's page and code are the same for everyone and name nothing of the deployment.
        page = await api.get("/")
        assets = [await api.get(f"/static/{name}") for name in ("dashboard.js", "render.js", "dashboard.css")]
        for r in (page, *assets):
            assert r.status_code == 200
            for internal in (settings.kafka.topic_prefix, settings.kafka.bootstrap, settings.stores.redis_url,
                             str(settings.stores.data_dir)):
                assert internal not in r.text
        # Its data comes only from /v1, which answers nothing without a credential.
        for path in ("/v1/projects", "/v1/agents", "/v1/stats", "/v1/keys"):
            assert (await api.get(path)).status_code == 401
