"""POST /v1/agents/drain and /v1/agents/reload: operators and admins of every project only; the
broadcast lands on the control topic as the workers read it."""

from __future__ import annotations

import asyncio

import pytest

from aios.streams.processors.agent_control import BROADCAST_PROJECT
from aios.streams.settings import Settings
from tests.integration.api.helpers import api_client, key_headers
from tests.integration.test_llm_journal import read

pytestmark = pytest.mark.integration


async def test_broadcasts_need_an_operator_or_admin_of_every_project(settings: Settings) -> None:
    async with api_client(settings) as api:
        refused = []
        for role, projects in [("viewer", ("*",)), ("submitter", ("*",)), ("operator", ("A",)), ("admin", ("A",))]:
            headers = await key_headers(api, role, projects)
            r = await api.post("/v1/agents/drain", json={}, headers=headers)
            refused.append((role, projects, r.status_code))
        assert [code for *_, code in refused] == [403, 403, 403, 403]
        operator = await key_headers(api, "operator", ("*",))
        drained = await api.post("/v1/agents/drain", json={"agent_id": "host-42", "reason": "deploy"}, headers=operator)
        admin = await key_headers(api, "admin", ("*",))
        reloaded = await api.post("/v1/agents/reload", json={"what": "llm"}, headers=admin)
        bad = await api.post("/v1/agents/reload", json={"what": "everything"}, headers=admin)
        extra = await api.post("/v1/agents/drain", json={"agent": "x"}, headers=admin)
    assert drained.status_code == 202 and drained.json()["target"] == "host-42"
    assert reloaded.status_code == 202 and reloaded.json() == {**reloaded.json(), "action": "reload", "target": "llm"}
    assert bad.status_code == 422 and extra.status_code == 422
    events = await asyncio.to_thread(read, settings, settings.kafka.topic_prefix + ".control", 2)
    assert [(e["project_id"], e["action"], e["target"]) for e in events] == [
        (BROADCAST_PROJECT, "drain", "host-42"), (BROADCAST_PROJECT, "reload", "llm")]
    assert events[0]["reason"] == "deploy" and events[0]["requested_by"].startswith("api:key:")
