"""The orchestrator on real Kafka: DAG release with dependency outputs, retries and the DLQ,
approval gates, cancellation, and recovery of its state from its state log after a restart."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import pytest
from confluent_kafka import KafkaException, Producer, TopicPartition
from pydantic import SecretStr

from aios.agents.llm.servers.openai import FakeOpenAI, status
from aios.schemas.limits import STATUS_MAX_PATH
from aios.streams.errors import KafkaError
from aios.streams.kafka import TopicReader, make_consumer, producer_config, read_partition
from aios.streams.orchestration.entries import Rebuilder
from aios.streams.orchestration.plan import parse_plan
from aios.streams.pipeline import running
from aios.streams.readmodels.task_client import TaskClient, build_task, wait_project
from aios.streams.settings import Settings
from aios.streams.topics import create_topics

pytestmark = pytest.mark.integration
ROLES = ("general", "backend", "qa")


@pytest.fixture
def roles_settings(settings: Settings) -> Settings:
    s = settings.replace(roles=ROLES)
    create_topics(s)
    return s


def plan_doc(project: str, *tasks: dict[str, Any]) -> str:
    return json.dumps({"project": project, "tasks": list(tasks)})


def read_all(settings: Settings, topic: str) -> list[dict[str, Any]]:
    reader = TopicReader(settings, f"{settings.kafka.topic_prefix}.{topic}", from_beginning=True)
    try:
        return [d.value for _, d in reader.events(timeout_s=3) if not isinstance(d, Exception)]
    finally:
        reader.close()


def two_steps(project: str) -> str:
    """a (general), then b (qa) with a's output."""
    return plan_doc(project, {"id": "a", "role": "general", "description": "a"},
                    {"id": "b", "role": "qa", "description": "b", "depends_on": ["a"]})


async def submit(settings: Settings, text: str) -> Any:
    plan = parse_plan(text, settings.processing.roles)
    client = TaskClient(settings)
    try:
        client.submit_plan(plan)
    finally:
        client.close()
    return plan


async def test_a_dag_runs_in_dependency_order_with_outputs_as_context(roles_settings: Settings) -> None:
    s = roles_settings
    text = plan_doc("dag", {"id": "api", "role": "backend", "description": "design the API"},
                    {"id": "ui", "role": "general", "description": "sketch the UI", "depends_on": ["api"]},
                    {"id": "tests", "role": "qa", "description": "plan the tests", "depends_on": ["api"]},
                    {"id": "ship", "role": "general", "description": "write release notes",
                     "depends_on": ["ui", "tests"], "priority": 5})
    async with running(s, ["orchestrator", "results", "agents"]):
        await submit(s, text)
        final = await asyncio.to_thread(wait_project, s, "dag", 60)
    assert final["state"] == "succeeded" and final["percent_done"] == 100.0
    assert final["counts"]["succeeded"] == 4
    results = read_all(s, "results")
    assert Counter(r["task_id"] for r in results) == Counter({"api": 1, "ui": 1, "tests": 1, "ship": 1})
    assignments = {a["task_id"]: a for a in read_all(s, "agent.general") + read_all(s, "agent.qa")}
    outputs = {r["task_id"]: r["output"] for r in results}
    assert assignments["ship"]["context"] == {"ui": outputs["ui"], "tests": outputs["tests"]}
    assert assignments["tests"]["context"] == {"api": outputs["api"]}
    # Never dispatched before its dependencies finished (the agents' attempt results).
    finished_at = {r["task_id"]: r["timestamp"] for r in read_all(s, "attempts")}
    assert assignments["ship"]["timestamp"] >= max(finished_at["ui"], finished_at["tests"])


async def test_a_long_chain_listed_last_task_first_gets_a_status_and_can_be_cancelled(roles_settings: Settings) -> None:
    # The recursive critical path overflowed the stack on ~400 such tasks, inside the status write
    # where nothing caught it: the orchestrator died, and died again on the same plan at restart.
    s, n = roles_settings, 2_000
    tasks = [{"id": f"t{i}", "role": "backend", "description": f"step {i}", "depends_on": [f"t{i - 1}"] if i else []}
             for i in reversed(range(n))]
    first: list[dict[str, Any]] = []

    def cancel_once_running(status: dict[str, Any]) -> None:
        if not first:
            first.append(status)
            client = TaskClient(s)
            try:
                client.control("chain", "cancel", reason="long enough")
            finally:
                client.close()

    async with running(s, ["orchestrator", "results"]):  # no agents: the chain stays unfinished
        await submit(s, plan_doc("chain", *tasks))
        final = await asyncio.to_thread(wait_project, s, "chain", 90, cancel_once_running)
    # The status carries the path's first STATUS_MAX_PATH ids (a 10,000-task chain would not fit in
    # a message whole) and says how long it is.
    assert first[0]["state"] == "running" and first[0]["critical_path"] == [f"t{i}" for i in range(STATUS_MAX_PATH)]
    assert f"the critical path has {n} tasks" in " ".join(first[0]["notes"])
    assert final["state"] == "cancelled" and final["counts"]["cancelled"] + final["counts"]["skipped"] == n


async def test_failures_retry_with_backoff_then_dead_letter_and_skip_dependents(roles_settings: Settings) -> None:
    with FakeOpenAI() as server:
        server.script(status(500), status(500), status(500))
        s = roles_settings.replace(
            llm="openai:gpt-4o-mini", openai_api_key=SecretStr("sk-test"),
            openai_base_url=server.base_url, llm_max_retries=0)
        text = plan_doc("flaky", {"id": "a", "role": "backend", "description": "always fails"},
                        {"id": "b", "role": "qa", "description": "needs a", "depends_on": ["a"]})
        async with running(s, ["orchestrator", "results", "agents"]):
            await submit(s, text)
            final = await asyncio.to_thread(wait_project, s, "flaky", 60)
        assert len(server.requests) == 3, "three attempts, then no more"
    assert final["state"] == "failed"
    results = {r["task_id"]: r for r in read_all(s, "results")}
    assert results["a"]["status"] == "failed" and results["a"]["attempt"] == 3
    assert results["b"]["status"] == "skipped" and "dependency a failed" in (results["b"]["error"] or "")
    attempts = [r for r in read_all(s, "attempts") if r["task_id"] == "a" and r["status"] != "started"]
    assert [r["attempt"] for r in attempts] == [1, 2, 3]
    gap_1 = (attempts[1]["timestamp"] - attempts[0]["timestamp"]).total_seconds()
    gap_2 = (attempts[2]["timestamp"] - attempts[1]["timestamp"]).total_seconds()
    assert gap_1 >= 0.3 and gap_2 >= 0.7, f"backoff grows: {gap_1:.2f}s then {gap_2:.2f}s"
    letters = [d for d in read_all(s, "dlq") if d["processor"] == "orchestrator"]
    assert len(letters) == 1 and len(letters[0]["errors"]) == 3


async def test_approval_gate_reject_and_recovery_after_restart(roles_settings: Settings) -> None:
    s = roles_settings
    text = plan_doc("gated", {"id": "draft", "role": "general", "description": "draft"},
                    {"id": "publish", "role": "general", "description": "publish", "depends_on": ["draft"],
                     "requires_approval": True},
                    {"id": "risky", "role": "backend", "description": "risky", "requires_approval": True},
                    {"id": "after-risky", "role": "qa", "description": "after", "depends_on": ["risky"]})
    async with running(s, ["orchestrator", "results", "agents"]):
        await submit(s, text)
        await asyncio.sleep(3)
    # The orchestrator stopped; its state must come back from its state log.
    async with running(s, ["orchestrator", "results", "agents"]):
        client = TaskClient(s)
        try:
            client.control("gated", "approve", "publish")
            client.control("gated", "reject", "risky", "too risky")
        finally:
            client.close()
        final = await asyncio.to_thread(wait_project, s, "gated", 60)
    states = {t["task_id"]: t["state"] for t in final["tasks"]}
    assert states == {"draft": "succeeded", "publish": "succeeded", "risky": "failed", "after-risky": "skipped"}
    results = read_all(s, "results")
    assert Counter(r["task_id"] for r in results) == Counter(dict.fromkeys(states, 1))  # one terminal result each


async def test_a_goal_is_planned_by_the_planner_then_run(settings: Settings) -> None:
    s = settings.replace(roles=("planner", "backend", "qa"))
    create_topics(s)
    async with running(s, ["orchestrator", "results", "agents"]):
        client = TaskClient(s)
        try:
            client.submit_goal("goal", "Build a URL shortener")
        finally:
            client.close()
        final = await asyncio.to_thread(wait_project, s, "goal", 60)
    # The offline planner answers with its contract's example plan, in two sprints: design, then
    # build -> test; its re-plan after the first (the contract's second example) adds validate
    # and makes build depend on it. No reviewer role runs here, so no review step.
    states = {t["task_id"]: t["state"] for t in final["tasks"]}
    assert states == dict.fromkeys(("plan", "design", "m1:replan", "validate", "build", "test"), "succeeded")
    assert [(sp["id"], sp["state"]) for sp in final["sprints"]] == [("m1", "done"), ("m2", "done")]
    assert final["replans"][0]["added"] == ["validate"] and final["replans"][0]["changed"] == ["build"]
    assignments = {a["task_id"]: a for a in read_all(s, "agent.backend") + read_all(s, "agent.qa")}
    assert set(assignments["test"]["context"]) == {"plan", "build"}  # the plan travels with every task
    assert assignments["design"]["acceptance"] == "Every endpoint and table the goal needs is named."
    plan_output = json.loads(assignments["design"]["context"]["plan"])
    assert [t["id"] for t in plan_output["tasks"]] == ["design", "build", "test"]


async def test_a_plan_naming_roles_not_running_fails_the_goal_visibly(settings: Settings) -> None:
    s = settings.replace(roles=("planner", "general"))  # the example plan needs backend, qa
    create_topics(s)
    async with running(s, ["orchestrator", "results", "agents"]):
        client = TaskClient(s)
        try:
            client.submit_goal("nogo", "Build a URL shortener")
        finally:
            client.close()
        final = await asyncio.to_thread(wait_project, s, "nogo", 90)
    [plan] = final["tasks"]
    assert final["state"] == "failed" and plan["state"] == "failed"
    assert "the planner's plan is invalid" in plan["reason"] and "unknown role 'backend'" in plan["reason"]


async def test_a_restricted_task_reaches_its_agent_restricted(settings: Settings) -> None:
    async with running(settings, ["orchestrator", "results"]):
        client = TaskClient(settings)
        try:
            for privacy in ("restricted", "normal", "typo"):
                client.submit(build_task(f"{privacy} work", privacy=privacy))
        finally:
            client.close()
        await asyncio.sleep(3)
    sent = {a["description"]: a["privacy"] for a in read_all(settings, "agent.general")}
    # Anything but "normal" fails closed: the task stays on local models.
    assert sent == {"restricted work": "restricted", "normal work": "normal", "typo work": "restricted"}


async def test_a_finished_project_past_its_retention_keeps_only_counts(roles_settings: Settings) -> None:
    s = roles_settings.replace(finished_project_retention_s=0.0)
    text = two_steps("done")
    async with running(s, ["orchestrator", "results", "agents"]):
        await submit(s, text)
        final = await asyncio.to_thread(wait_project, s, "done", 60)
        assert final["state"] == "succeeded"

        def archived() -> bool:
            rebuilder = Rebuilder()
            for p in range(s.kafka.topic_partitions):
                for msg in read_partition(s, f"{s.kafka.topic_prefix}.orchestrator-state", p):
                    rebuilder.add(msg.key() or b"", msg.value())
            state = rebuilder.states().get("done")
            return state is not None and not state.dag.nodes and state.archived == {"succeeded": 2}

        deadline = asyncio.get_running_loop().time() + 30  # the sweep runs every 10 s
        while not archived():
            assert asyncio.get_running_loop().time() < deadline, "the finished project was never archived"
            await asyncio.sleep(1)
        await submit(s, text)  # the same project again: still known, so refused
        await asyncio.sleep(2)
    letters = [d for d in read_all(s, "dlq") if d["processor"] == "orchestrator"]
    assert any("project 'done' already exists" in d["error"] for d in letters)
    # Its last status, with the task list, is the one that stays.
    status = [v for v in read_all(s, "project-status") if v["project_id"] == "done"][-1]
    assert {t["task_id"] for t in status["tasks"]} == {"a", "b"}


async def test_group_fencing_commits_the_offsets_inside_the_transactions(roles_settings: Settings) -> None:
    s = roles_settings.replace(orchestrator_group_fencing=True)
    text = two_steps("fenced")
    async with running(s, ["orchestrator", "results", "agents"]):
        await submit(s, text)
        final = await asyncio.to_thread(wait_project, s, "fenced", 60)
    assert final["state"] == "succeeded"
    consumer = make_consumer(s, group=f"{s.kafka.topic_prefix}-orchestrator")
    try:
        topic = f"{s.kafka.topic_prefix}.attempts"
        committed = consumer.committed([TopicPartition(topic, p) for p in range(s.kafka.topic_partitions)], timeout=10)
    finally:
        consumer.close()
    # Both attempts and both pickups (started), committed by the transactions.
    assert sum(max(tp.offset, 0) for tp in committed) == 4


async def test_an_assignment_nobody_answers_times_out_retries_then_dead_letters(roles_settings: Settings) -> None:
    s = roles_settings.replace(task_timeout_s=1.0, pickup_timeout_s=1.0)
    text = plan_doc("silent", {"id": "a", "role": "backend", "description": "nobody runs backend here"},
                    {"id": "b", "role": "qa", "description": "needs a", "depends_on": ["a"]})
    async with running(s, ["orchestrator", "results"]):  # no agents: every assignment goes unanswered
        await submit(s, text)
        final = await asyncio.to_thread(wait_project, s, "silent", 60)
    assert final["state"] == "failed"
    results = {r["task_id"]: r for r in read_all(s, "results")}
    assert results["a"]["status"] == "failed" and results["a"]["attempt"] == 3
    assert "not picked up within 1s" in (results["a"]["error"] or "")
    assert results["b"]["status"] == "skipped"
    assert [a["attempt"] for a in read_all(s, "agent.backend")] == [1, 2, 3]
    [letter] = [d for d in read_all(s, "dlq") if d["processor"] == "orchestrator"]
    assert letter["errors"] == [f"attempt {n}: not picked up within 1s" for n in (1, 2, 3)]


async def test_an_orchestrator_without_its_topics_says_what_to_do(settings: Settings) -> None:
    s = settings.replace(topic_prefix=f"{settings.kafka.topic_prefix}-none")  # never created
    with pytest.raises(KafkaError, match=r"no partitions assigned within 5s; .*aios topics create"):
        async with running(s, ["orchestrator"], ready_timeout_s=5):
            pass


async def test_a_restart_fences_both_producers_of_a_killed_predecessor(roles_settings: Settings) -> None:
    """Batches alternate between two transactional ids; a predecessor killed with a transaction
    open on either one must not hold back read_committed readers, nor commit after the restart."""
    s = roles_settings
    zombie = Producer(producer_config(s, **{
        "transactional.id": f"{s.kafka.topic_prefix}-orchestrator-{s.processing.instance}-alt", "linger.ms": 0,
        "transaction.timeout.ms": 120_000}))  # only the restart can end it within the test
    zombie.init_transactions(30)
    zombie.begin_transaction()
    for partition in range(s.kafka.topic_partitions):  # whichever partition the project's statuses take
        zombie.produce(f"{s.kafka.topic_prefix}.project-status", value=b"never committed", key=b"zombie", partition=partition)
    zombie.flush(10)
    async with running(s, ["orchestrator", "results", "agents"]):
        await submit(s, two_steps("after-zombie"))
        final = await asyncio.to_thread(wait_project, s, "after-zombie", 30)
    assert final["state"] == "succeeded"  # read_committed readers got past the open transaction
    with pytest.raises(KafkaException) as fenced:
        zombie.commit_transaction(10)
    assert fenced.value.args[0].fatal()
