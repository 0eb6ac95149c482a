"""RBAC: every role against every route, on its own project and on another one. A credential for
project A never sees project B: B's task or status is a 404, a write into B a 403."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from aios.schemas.events import envelope, now_ms
from aios.streams.kafka import EventProducer
from aios.streams.settings import Settings
from aios.streams.topics import Topics
from tests.integration.api.helpers import api_client, key_headers, poll

pytestmark = pytest.mark.integration

GRANTS = {"viewer": {"read"}, "submitter": {"read", "submit"}, "operator": {"read", "submit", "control"},
          "admin": {"read", "submit", "control", "admin"}}

# (permission, method, path, body); {p} is the project and {t} a task of it.
ROUTES: list[tuple[str, str, str, Any]] = [
    ("read", "GET", "/v1/projects/{p}", None),
    ("read", "GET", "/v1/projects/{p}/results", None),
    ("read", "GET", "/v1/tasks/{t}", None),
    ("read", "GET", "/v1/stats?project={p}&since_s=60", None),
    ("read", "GET", "/v1/agents", None),
    ("read", "GET", "/v1/projects", None),
    ("submit", "POST", "/v1/tasks", {"description": "x", "project": "{p}"}),
    ("submit", "POST", "/v1/projects", {"project": "{p}-new", "goal": "g"}),
    ("control", "POST", "/v1/tasks/{t}/approve", None),
    ("control", "POST", "/v1/tasks/{t}/reject", {"reason": "no"}),
    ("control", "POST", "/v1/tasks/{t}/cancel", None),
    ("admin", "GET", "/v1/keys", None),
    ("admin", "POST", "/v1/keys", {"role": "viewer", "projects": ["{p}"]}),
]
UNSCOPED = {("GET", "/v1/agents"), ("GET", "/v1/projects")}  # answer for every credential, filtered to its projects


def seed(settings: Settings) -> None:
    """Project A and B, each with one finished task, straight onto the topics."""
    topics, producer = Topics.from_settings(settings), EventProducer(settings)
    for p in ("A", "B"):
        t = f"t{p}"
        producer.send(topics.tasks, "Task", {**envelope(), "task_id": t, "project_id": p, "role": "general",
                                             "description": "d", "priority": 0, "depends_on": [], "privacy": "normal",
                                             "submitted_by": "test", "metadata": {}}, key=p)
        producer.send(topics.results, "TaskResult", {
            **envelope(), "task_id": t, "project_id": p, "role": "general", "attempt": 1, "status": "succeeded",
            "output": "ok", "error": None, "error_type": None, "agent_id": "a1", "provider": "offline",
            "model": "echo", "input_tokens": 1, "output_tokens": 1, "cost_usd": 0.0, "latency_ms": 1.0,
            "submitted_at": now_ms(), "recall": []}, key=p)
        producer.send(topics.project_status, "ProjectStatus", {
            **envelope(), "project_id": p, "state": "succeeded", "counts": {"succeeded": 1}, "percent_done": 100.0,
            "critical_path": [], "cost_usd": 0.0, "budget_usd": None, "started_at": now_ms(), "elapsed_ms": 5,
            "notes": [], "tasks": [{"task_id": t, "role": "general", "state": "succeeded", "attempts": 1,
                                    "reason": ""}]}, key=p)
    producer.send(topics.agents, "AgentStatus", {
        **envelope(), "agent_id": "a1", "role": "general", "state": "busy", "in_flight": ["tA", "tB"],
        "version": "1", "host": "h", "heartbeat_interval_ms": 5000}, key="a1")
    producer.flush()


def fill(value: Any, project: str) -> Any:
    if isinstance(value, str):
        return value.replace("{p}", project).replace("{t}", f"t{project}")
    if isinstance(value, dict):
        return {k: fill(v, project) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, project) for v in value]
    return value


def expected(role: str, permission: str, method: str, path: str, project: str) -> set[int]:
    if permission not in GRANTS[role]:
        return {403}
    if permission == "admin":
        return {403}  # a key scoped to project A may not manage keys
    if project == "A" or (method, path) in UNSCOPED:
        return {200, 201, 202}
    if permission == "submit":
        return {403}
    return {404}


@pytest.mark.parametrize("role", list(GRANTS))
async def test_role_by_route_matrix(settings: Settings, role: str) -> None:
    seed(settings)
    async with api_client(settings) as api:
        admin = await key_headers(api, "admin", ("*",))
        await poll(lambda: api.get("/v1/projects", headers=admin), lambda r: len(r.json()["projects"]) == 2)
        headers = await key_headers(api, role, ("A", "A-new"))
        wrong: list[str] = []
        for permission, method, path, body in ROUTES:
            for project in ("A", "B"):
                url = fill(path, project)
                r = await api.request(method, url, json=fill(body, project), headers=headers)
                want = expected(role, permission, method, path, project)
                if r.status_code not in want:
                    wrong.append(f"{role} {method} {url}: {r.status_code} (want {sorted(want)}) {r.text[:120]}")
        assert wrong == []
        await assert_no_leak(api, headers)


async def assert_no_leak(api: httpx.AsyncClient, headers: dict[str, str]) -> None:
    """The unscoped routes filter out project B."""
    projects = (await api.get("/v1/projects", headers=headers)).json()["projects"]
    assert [p["project_id"] for p in projects] == ["A"]  # (A-new has no status: no orchestrator runs)
    agents = (await api.get("/v1/agents", headers=headers)).json()["agents"]
    assert agents[0]["in_flight"] == ["tA"]
    unscoped_stats = await api.get("/v1/stats", headers=headers)
    assert unscoped_stats.status_code == 403 and "?project=" in unscoped_stats.json()["detail"]


async def test_admin_for_every_project_manages_keys(settings: Settings) -> None:
    async with api_client(settings) as api:
        admin = await key_headers(api, "admin", ("*",))
        created = await api.post("/v1/keys", json={"role": "viewer", "projects": ["A"], "name": "ci"}, headers=admin)
        assert created.status_code == 201 and created.json()["key"].startswith("aios_")
        key_id = created.json()["id"]
        listed = (await api.get("/v1/keys", headers=admin)).json()["keys"]
        assert {k["id"] for k in listed} >= {key_id} and all("key" not in k for k in listed)
        viewer = {"Authorization": f"Bearer {created.json()['key']}"}
        assert (await api.get("/v1/projects", headers=viewer)).status_code == 200
        assert (await api.delete(f"/v1/keys/{key_id}", headers=admin)).json()["revoked"] is True
        assert (await api.get("/v1/projects", headers=viewer)).status_code == 401
        assert (await api.delete("/v1/keys/0000000000000000", headers=admin)).status_code == 404
        bad = await api.post("/v1/keys", json={"role": "root", "projects": ["A"]}, headers=admin)
        assert bad.status_code == 422
