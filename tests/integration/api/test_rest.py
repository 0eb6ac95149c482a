"""The REST API on the real Kafka, Redis and chdb: tasks and plans submitted through it run through
the embedded pipeline, and their state and results are read back through it."""

from __future__ import annotations

import httpx
import pytest

from aios.schemas.events import envelope, now_ms
from aios.streams.kafka import EventProducer
from aios.streams.pipeline import running
from aios.streams.settings import Settings
from aios.streams.topics import Topics, create_topics
from tests.integration.api.helpers import api_client, poll

pytestmark = pytest.mark.integration


async def test_a_task_submitted_through_the_api_runs_and_its_result_is_readable(settings: Settings) -> None:
    async with running(settings, ["orchestrator", "results", "agents", "history"]) as live, \
            api_client(settings, store=lambda: live.runtime.store, as_admin=True) as api:
        r = await api.post("/v1/tasks", json={"description": "say hello", "project": f"web-{settings.kafka.topic_prefix}"})
        assert r.status_code == 202, r.text
        accepted = r.json()
        assert accepted["project_id"] == f"web-{settings.kafka.topic_prefix}" and accepted["offset"] >= 0
        task = await poll(lambda: api.get(f"/v1/tasks/{accepted['task_id']}"),
                          lambda r: r.status_code == 200 and r.json()["state"] == "succeeded")
        body = task.json()
        assert body["result"]["status"] == "succeeded" and "say hello" in body["result"]["output"]
        assert body["description"] == "say hello" and body["role"] == "general"
        # The chdb directory is shared by the session's tests; the project is this test's own.
        stats = await poll(lambda: api.get("/v1/stats", params={"project": f"web-{settings.kafka.topic_prefix}", "since_s": 600}),
                           lambda r: r.status_code == 200 and r.json()["succeeded"] >= 1)
        assert stats.json()["failed"] == 0 and stats.json()["engine"] == "chdb"
        ready = await api.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"kafka": "ok", "redis": "ok", "store": "ok", "view": "ok"}


async def test_a_plan_runs_and_project_status_and_results_follow(settings: Settings) -> None:
    plan = {"project": "shop", "tasks": [
        {"id": "api", "role": "general", "description": "design the API"},
        {"id": "ship", "role": "general", "description": "release notes", "depends_on": ["api"],
         "requires_approval": True}]}
    async with running(settings, ["orchestrator", "results", "agents"]), api_client(settings, as_admin=True) as api:
        r = await api.post("/v1/projects", json=plan)
        assert r.status_code == 202, r.text
        assert r.json()["task_ids"] == ["api", "ship"]
        waiting = await poll(lambda: api.get("/v1/projects/shop"),
                             lambda r: r.status_code == 200 and r.json()["counts"].get("awaiting_approval") == 1)
        entries = {t["task_id"]: t for t in waiting.json()["tasks"]}
        assert entries["ship"]["depends_on"] == ["api"] and entries["api"]["state"] == "succeeded"
        assert (await api.post("/v1/tasks/ship/approve")).status_code == 202
        done = await poll(lambda: api.get("/v1/projects/shop"), lambda r: r.json()["state"] == "succeeded")
        assert done.json()["percent_done"] == 100.0
        results = (await api.get("/v1/projects/shop/results")).json()["results"]
        assert sorted(r["task_id"] for r in results) == ["api", "ship"]
        listed = (await api.get("/v1/projects")).json()["projects"]
        assert [p["project_id"] for p in listed] == ["shop"]
        again = await api.post("/v1/projects", json=plan)
        assert again.status_code == 409 and "already exists" in again.json()["detail"]


async def test_a_goal_becomes_a_one_task_project_and_cancel_and_reject_are_sent(settings: Settings) -> None:
    async with running(settings, ["orchestrator", "results", "agents"]), api_client(settings, as_admin=True) as api:
        r = await api.post("/v1/projects", json={"project": "g1", "goal": "write a haiku"})
        assert r.status_code == 202 and r.json()["task_ids"] == ["goal"]
        await poll(lambda: api.get("/v1/projects/g1"), lambda r: r.status_code == 200 and r.json()["state"] == "succeeded")
        gated = {"project": "g2", "tasks": [{"id": "a", "role": "general", "description": "x", "requires_approval": True},
                                            {"id": "b", "role": "general", "description": "y", "depends_on": ["a"]}]}
        assert (await api.post("/v1/projects", json=gated)).status_code == 202
        await poll(lambda: api.get("/v1/projects/g2"), lambda r: r.status_code == 200
                   and r.json()["counts"].get("awaiting_approval") == 1)
        rejected = await api.post("/v1/tasks/a/reject", json={"reason": "not needed"}, params={"project": "g2"})
        assert rejected.status_code == 202 and rejected.json() == {"project_id": "g2", "task_id": "a", "action": "reject"}
        final = await poll(lambda: api.get("/v1/projects/g2"), lambda r: r.json()["state"] in ("failed", "cancelled"))
        states = {t["task_id"]: t["state"] for t in final.json()["tasks"]}
        assert states == {"a": "failed", "b": "skipped"}


async def test_bad_input_is_a_clear_4xx(settings: Settings) -> None:
    async with api_client(settings, as_admin=True) as api:
        assert (await api.post("/v1/tasks", json={"description": ""})).status_code == 422
        extra = await api.post("/v1/tasks", json={"description": "x", "colour": "red"})
        assert extra.status_code == 422 and "colour" in extra.text
        role = await api.post("/v1/tasks", json={"description": "x", "role": "wizard"})
        assert role.status_code == 400 and "unknown role 'wizard'" in role.json()["detail"]
        both = await api.post("/v1/projects", json={"project": "p", "goal": "g", "tasks": [
            {"id": "a", "role": "general", "description": "d"}]})
        assert both.status_code == 422 and "not both" in both.text
        cycle = await api.post("/v1/projects", json={"project": "p", "tasks": [
            {"id": "a", "role": "general", "description": "d", "depends_on": ["b"]},
            {"id": "b", "role": "general", "description": "d", "depends_on": ["a"]}]})
        assert cycle.status_code == 400 and "cycle" in cycle.json()["detail"]
        missing = await api.get("/v1/tasks/nope")
        assert missing.status_code == 404 and "nope" in missing.json()["detail"]
        assert (await api.get("/v1/projects/nope")).status_code == 404
        assert (await api.post("/v1/tasks/nope/cancel")).status_code == 404
        assert (await api.get("/healthz")).json() == {"status": "ok", "checks": {}}


async def test_agents_come_from_the_compacted_registry(settings: Settings) -> None:
    producer = EventProducer(settings)
    status = {**envelope(), "agent_id": "host-1", "role": "general", "state": "ready", "in_flight": [],
              "version": "0.1.0", "host": "host", "heartbeat_interval_ms": 5000}
    producer.send(Topics.from_settings(settings).agents, "AgentStatus", status, key="host-1")
    producer.flush()
    async with api_client(settings, as_admin=True) as api:
        agents = (await api.get("/v1/agents")).json()["agents"]
        assert [(a["agent_id"], a["state"]) for a in agents] == [("host-1", "ready")]
        busy = {**status, **envelope(), "state": "busy", "in_flight": ["t1"]}
        producer.send(Topics.from_settings(settings).agents, "AgentStatus", busy, key="host-1")
        producer.flush()
        after = await poll(lambda: api.get("/v1/agents"), lambda r: r.json()["agents"][0]["state"] == "busy")
        assert after.json()["agents"][0]["in_flight"] == ["t1"]


async def test_agents_silent_are_gone_then_dropped_and_a_tombstone_removes_one(settings: Settings) -> None:
    producer = EventProducer(settings)
    topic = Topics.from_settings(settings).agents

    def status(agent_id: str, silent_s: float) -> dict[str, object]:
        return {**envelope(), "timestamp": now_ms() - int(silent_s * 1000), "agent_id": agent_id, "role": "general",
                "state": "ready", "in_flight": [], "version": "0.1.0", "host": "h", "heartbeat_interval_ms": 5000}

    for agent_id, silent_s in (("live", 0), ("silent", 30), ("long-gone", 3600), ("stopping", 0)):
        producer.send(topic, "AgentStatus", status(agent_id, silent_s), key=agent_id)
    producer.flush()
    async with api_client(settings, as_admin=True) as api:
        listed = (await api.get("/v1/agents")).json()
        assert {a["agent_id"]: a["state"] for a in listed["agents"]} == {
            "live": "ready", "silent": "gone", "stopping": "ready"}
        assert listed["forget_after_s"] == settings.processing.agent_forget_after_s
        producer.send_tombstone(topic, "stopping")  # what a worker that stopped cleanly sends last
        producer.flush()
        after = await poll(lambda: api.get("/v1/agents"),
                           lambda r: "stopping" not in {a["agent_id"] for a in r.json()["agents"]})
        assert {a["agent_id"] for a in after.json()["agents"]} == {"live", "silent"}


async def test_work_for_a_role_no_live_agent_serves_is_accepted_and_says_so(settings: Settings) -> None:
    settings = settings.replace(roles="general,qa,writer")
    create_topics(settings)
    producer = EventProducer(settings)
    qa = {**envelope(), "agent_id": "qa-1", "role": "qa", "roles": ["qa"], "state": "ready", "in_flight": [],
          "version": "0.1.0", "host": "h", "heartbeat_interval_ms": 5000}
    producer.send(Topics.from_settings(settings).agents, "AgentStatus", qa, key="qa-1")
    producer.flush()
    async with api_client(settings, as_admin=True) as api:
        served = await api.post("/v1/tasks", json={"description": "check it", "role": "qa", "project": "r"})
        assert served.status_code == 202 and served.json()["unserved_roles"] == []
        plan = {"project": "r2", "tasks": [{"id": "a", "role": "qa", "description": "x"},
                                           {"id": "b", "role": "writer", "description": "y", "depends_on": ["a"]}]}
        waits = await api.post("/v1/projects", json=plan)
        assert waits.status_code == 202 and waits.json()["unserved_roles"] == ["writer"]
        goal = await api.post("/v1/projects", json={"project": "r3", "goal": "Build a shop"})
        assert goal.status_code == 202 and goal.json()["unserved_roles"] == ["general"]  # no planner here: one task
        unknown = await api.post("/v1/tasks", json={"description": "x", "role": "astronaut", "project": "r"})
        assert unknown.status_code in (400, 422) and "astronaut" in unknown.text


async def test_readyz_reports_an_unreachable_redis(settings: Settings) -> None:
    broken = settings.replace(redis_url="redis://127.0.0.1:1/0")
    async with api_client(broken) as api:
        r = await api.get("/readyz")
        assert r.status_code == 503
        # Without a credential: which check fails, never why (the address, the error text).
        assert r.json()["checks"] == {"kafka": "ok", "redis": "unavailable", "store": "ok", "view": "ok"}
        assert "127.0.0.1" not in r.text
        # Credentials cannot be checked: a clear 503, not a 500 or a dropped connection.
        key_like = {"Authorization": "Bearer aios_0123456789abcdef_" + "x" * 43}
        down = await api.get("/v1/projects", headers=key_like)
        assert down.status_code == 503 and down.headers["retry-after"] == "1"
        assert "Redis is unavailable" in down.json()["detail"]
    assert isinstance(api, httpx.AsyncClient)


async def test_a_plan_in_sprints_shows_them_and_a_sprint_is_approved_by_its_milestone_id(settings: Settings) -> None:
    plan = {"project": "sp", "milestones": [{"id": "m1", "title": "first", "requires_approval": True},
                                            {"id": "m2", "title": "second"}],
            "tasks": [{"id": "a", "role": "general", "description": "design", "milestone": "m1",
                       "acceptance": "has a design", "estimate": {"tokens": 10, "seconds": 1, "cost_usd": 0.5}},
                      {"id": "b", "role": "general", "description": "build", "milestone": "m2", "depends_on": ["a"]}]}
    async with running(settings, ["orchestrator", "results", "agents"]), api_client(settings, as_admin=True) as api:
        refused = await api.post("/v1/projects", json={"project": "sg", "goal": "x", "milestones": [{"id": "m1"}]})
        assert refused.status_code == 400 and "for a goal, the planner chooses" in refused.json()["detail"]
        assert (await api.post("/v1/projects", json=plan)).status_code == 202
        waiting = await poll(lambda: api.get("/v1/projects/sp"), lambda r: r.status_code == 200
                             and r.json()["sprints"] and r.json()["sprints"][0]["state"] == "awaiting_approval")
        assert "sprint m1 awaits approval: aios approve m1 --project sp" in waiting.json()["notes"]
        assert (await api.post("/v1/tasks/m1/approve")).status_code == 404  # a milestone needs its project
        approved = await api.post("/v1/tasks/m1/approve", params={"project": "sp"})
        assert approved.status_code == 202 and approved.json()["project_id"] == "sp"
        done = (await poll(lambda: api.get("/v1/projects/sp"), lambda r: r.json()["state"] == "succeeded")).json()
    # Only general runs here: no reviewer or planner, so no review or re-plan steps.
    assert [(s["id"], s["state"], s["tasks"]) for s in done["sprints"]] == [("m1", "done", 1), ("m2", "done", 1)]
    a = {t["task_id"]: t for t in done["tasks"]}["a"]
    assert (a["milestone"], a["estimate_usd"], a["estimate_tokens"]) == ("m1", 0.5, 10) and a["tokens"] > 0
    assert done["replans"] == []
