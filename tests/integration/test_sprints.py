"""Sprints on the real broker, with a scripted model on the local OpenAI wire-format server: two
sprints, a review that rejects a task, a re-plan that changes the remaining work, approval at a
boundary, an invalid re-plan that keeps the plan, and an orchestrator SIGKILLed mid-sprint.

Each plan is a chain, so one LLM call is in flight at a time and the script's order is the calls'.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from aios.agents.llm.servers.openai import Behaviour, FakeOpenAI, ok, slow_first_token
from aios.streams.orchestration.plan import parse_plan
from aios.streams.pipeline import running
from aios.streams.readmodels.task_client import TaskClient, project_statuses, wait_project
from aios.streams.settings import Settings
from aios.streams.topics import create_topics
from tests.integration.helpers import wait_until
from tests.integration.test_orchestrator import read_all

pytestmark = pytest.mark.integration
ROLES = ("general", "planner", "reviewer")


def scripted(settings: Settings, server: FakeOpenAI) -> Settings:
    s = settings.replace(roles=ROLES, llm="openai:gpt-4o-mini", openai_api_key=SecretStr("sk-test"),
                         openai_base_url=server.base_url, llm_max_retries=0)
    create_topics(s)
    return s


def plan(project: str, *, gate: bool = False) -> str:
    return json.dumps({"project": project, "budget_usd": 5.0, "milestones": [
        {"id": "m1", "title": "the design"}, {"id": "m2", "title": "the build", "requires_approval": gate}],
        "tasks": [
            {"id": "design", "role": "general", "milestone": "m1", "description": "Design a URL shortener API",
             "acceptance": "names the redirect endpoint", "estimate": {"tokens": 300, "seconds": 2, "cost_usd": 0.01}},
            {"id": "build", "role": "general", "milestone": "m2", "description": "Build the API",
             "depends_on": ["design"], "acceptance": "every endpoint works", "estimate": {"tokens": 500}},
            {"id": "docs", "role": "general", "milestone": "m2", "description": "Document the API",
             "depends_on": ["build"]}]})


def review(verdict: str, **tasks: str) -> Behaviour:
    return ok(json.dumps({"summary": f"review: {verdict}", "verdict": verdict, "comments": [],
                          "tasks": [{"id": t, "verdict": v, "comment": f"{t}: {v}"} for t, v in tasks.items()]}))


def replan(summary: str, *tasks: dict[str, Any], remove: tuple[str, ...] = ()) -> Behaviour:
    return ok(json.dumps({"summary": summary, "tasks": list(tasks), "remove": list(remove)}))


VALIDATE = {"id": "validate", "role": "general", "milestone": "m2", "description": "Validate the short codes",
            "depends_on": ["design"], "acceptance": "refuses bad codes", "estimate": {"cost_usd": 0.01}}
BUILD_ON_VALIDATE = {"id": "build", "role": "general", "milestone": "m2", "description": "Build the API on validate",
                     "depends_on": ["design", "validate"], "acceptance": "every endpoint works"}


def submit(s: Settings, text: str) -> None:
    client = TaskClient(s)
    try:
        client.submit_plan(parse_plan(text, s.processing.roles))
    finally:
        client.close()


def one_result_each(s: Settings, status: dict[str, Any]) -> None:
    results = read_all(s, "results")
    assert Counter(r["task_id"] for r in results) == Counter({t["task_id"]: 1 for t in status["tasks"]})


def prompts(server: FakeOpenAI) -> list[str]:
    return [m["content"] for r in server.requests for m in r.body["messages"] if m["role"] == "user"]


async def test_two_sprints_a_rejecting_review_and_a_replan_that_changes_the_rest(settings: Settings) -> None:
    with FakeOpenAI() as server:
        s = scripted(settings, server)
        server.script(ok("POST /links and GET /{code} redirects"),
                      review("request_changes", design="request_changes"),
                      replan("validate codes before building", VALIDATE, BUILD_ON_VALIDATE, remove=("docs",)),
                      ok("validation done"), ok("built"), review("approve", validate="approve", build="approve"))
        async with running(s, ["orchestrator", "results", "agents"]):
            submit(s, plan("sprints"))
            final = await asyncio.to_thread(wait_project, s, "sprints", 120)
        asked = prompts(server)
    states = {t["task_id"]: t["state"] for t in final["tasks"]}
    assert states == dict.fromkeys(("design", "m1:review", "m1:replan", "validate", "build", "m2:review"), "succeeded")
    assert final["state"] == "succeeded"
    # The acceptance criterion reaches the agent, and the reviewer is asked to check it.
    assert "Acceptance criterion (the work is judged done against it): names the redirect endpoint" in asked[0]
    assert "acceptance: names the redirect endpoint" in asked[1] and "POST /links" in asked[1]
    # The re-plan reads the review and the remaining plan.
    assert "review: request_changes" in asked[2] and '"id": "docs"' in asked[2]
    tasks = {t["task_id"]: t for t in final["tasks"]}
    assert tasks["design"]["review"] == "request_changes: design: request_changes"
    assert tasks["design"]["milestone"] == "m1" and tasks["design"]["estimate_tokens"] == 300
    assert tasks["design"]["tokens"] > 0 and tasks["design"]["seconds"] > 0
    [m1, m2] = final["sprints"]
    assert (m1["id"], m1["state"], m1["tasks"], m2["state"], m2["tasks"]) == ("m1", "done", 1, "done", 2)
    assert m1["estimate_usd"] == pytest.approx(0.01) and m2["estimate_usd"] == pytest.approx(0.01)
    assert m1["review"].startswith("request_changes") and m2["review"].startswith("approve")
    [change] = final["replans"]
    assert (change["after"], change["state"], change["added"], change["removed"], change["changed"]) == (
        "m1", "applied", ["validate"], ["docs"], ["build"])
    one_result_each(s, final)


async def test_a_sprint_boundary_waits_for_approval(settings: Settings) -> None:
    with FakeOpenAI() as server:
        s = scripted(settings, server)
        server.script(ok("design"), review("approve", design="approve"),
                      replan("keep going", {**BUILD_ON_VALIDATE, "depends_on": ["design"]}),
                      ok("built"), ok("documented"), review("approve"))
        seen: list[dict[str, Any]] = []
        async with running(s, ["orchestrator", "results", "agents"]):
            submit(s, plan("gated", gate=True))

            def waiting() -> bool:
                status = project_statuses(s).get("gated")
                return bool(status and status["sprints"] and status["sprints"][1]["state"] == "awaiting_approval")

            await wait_until(waiting, 90)
            status = project_statuses(s)["gated"]
            seen.append(status)
            assert len(server.requests) == 3  # nothing of m2 ran before the approval
            client = TaskClient(s)
            try:
                client.control("gated", "approve", "m2")
            finally:
                client.close()
            final = await asyncio.to_thread(wait_project, s, "gated", 90)
    assert "sprint m2 awaits approval: aios approve m2 --project gated" in seen[0]["notes"]
    assert {t["task_id"]: t["state"] for t in seen[0]["tasks"]}["build"] == "pending"
    assert final["state"] == "succeeded" and [sp["state"] for sp in final["sprints"]] == ["done", "done"]
    assert final["replans"][0]["changed"] == ["build"]
    one_result_each(s, final)


async def test_an_invalid_replan_fails_clearly_and_the_project_goes_on(settings: Settings) -> None:
    bad = replan("depends on nothing real", {"id": "x", "role": "general", "milestone": "m2",
                                             "description": "x", "depends_on": ["ghost"]})
    with FakeOpenAI() as server:
        s = scripted(settings, server)
        server.script(ok("design"), review("approve"), bad, bad, bad, ok("built"), ok("documented"), review("approve"))
        async with running(s, ["orchestrator", "results", "agents"]):
            submit(s, plan("invalid"))
            final = await asyncio.to_thread(wait_project, s, "invalid", 120)
    tasks = {t["task_id"]: t for t in final["tasks"]}
    assert tasks["m1:replan"]["state"] == "failed" and tasks["m1:replan"]["attempts"] == 3
    assert "re-plan is invalid" in tasks["m1:replan"]["reason"] and "unknown task 'ghost'" in tasks["m1:replan"]["reason"]
    # The plan as it was ran to the end.
    assert {t: tasks[t]["state"] for t in ("design", "build", "docs", "m2:review")} == dict.fromkeys(
        ("design", "build", "docs", "m2:review"), "succeeded")
    [failed] = final["replans"]
    assert failed["state"] == "failed" and "the remaining plan was kept" in failed["error"]
    assert any("the re-plan after sprint m1 failed" in n for n in final["notes"])
    one_result_each(s, final)


class OrchestratorProcess:
    """``aios worker orchestrator`` in its own process, so it can be SIGKILLed."""

    def __init__(self, s: Settings, tmp: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("AIOS_", "OPENAI_"))}
        self.env.update({"AIOS_TOPIC_PREFIX": s.kafka.topic_prefix, "AIOS_KAFKA_BOOTSTRAP": s.kafka.bootstrap,
                         "AIOS_REDIS_URL": s.stores.redis_url, "AIOS_DATA_DIR": str(tmp),
                         "AIOS_ROLES": ",".join(ROLES), "AIOS_METRICS_PORT": "0", "AIOS_LLM": "offline:echo"})
        self.proc: subprocess.Popen[str] | None = None
        self.log: list[str] = []

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from aios.cli import main; sys.argv[0] = 'aios'; main()",
             "worker", "orchestrator"], env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        ready = threading.Event()

        def drain(proc: subprocess.Popen[str]) -> None:
            for line in proc.stderr or ():
                self.log.append(line)
                if "aios: ready" in line:
                    ready.set()

        threading.Thread(target=drain, args=(self.proc,), daemon=True).start()
        assert ready.wait(90), "the orchestrator did not start:\n" + "".join(self.log[-30:])

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)  # no shutdown, no commit, no abort
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


async def test_an_orchestrator_killed_mid_sprint_resumes_with_exactly_one_result_each(
        settings: Settings, tmp_path: Path) -> None:
    with FakeOpenAI() as server:
        s = scripted(settings, server)
        server.script(ok("design"), review("request_changes", design="request_changes"),
                      replan("validate first", VALIDATE, BUILD_ON_VALIDATE),
                      slow_first_token(4.0, "validated"), ok("built"), ok("documented"), review("approve"))
        orchestrator = OrchestratorProcess(s, tmp_path)
        orchestrator.start()
        try:
            async with running(s, ["results", "agents"]):
                submit(s, plan("killed"))

                def validating() -> bool:
                    status = project_statuses(s).get("killed")
                    return bool(status and any(t["task_id"] == "validate" and t["state"] == "dispatched"
                                               for t in status["tasks"]))

                await wait_until(validating, 90)  # sprint m2 runs, its first task is with the model
                orchestrator.kill()
                await asyncio.sleep(1)
                orchestrator.start()
                final = await asyncio.to_thread(wait_project, s, "killed", 120)
        finally:
            orchestrator.stop()
    states = {t["task_id"]: t["state"] for t in final["tasks"]}
    assert states == dict.fromkeys(("design", "m1:review", "m1:replan", "validate", "build", "docs", "m2:review"),
                                   "succeeded")
    assert len(server.requests) == 7  # no step was asked twice: the review and re-plan ran once
    assert [r["added"] for r in final["replans"]] == [["validate"]]
    one_result_each(s, final)
    assignments = Counter(a["task_id"] for a in read_all(s, "agent.general"))
    assert assignments == Counter(dict.fromkeys(("design", "validate", "build", "docs"), 1))
