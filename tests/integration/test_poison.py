"""Records that once stopped the platform, on the real broker: each is dead-lettered with its reason,
no processor exits, and a normal task submitted afterwards still succeeds.

Reproduced first with the project's own modules: a JSON task whose priority the plan model refused
killed the orchestrator (and again at every restart); so did a task whose description was over the
limit or whose id held '/', and an assignment over the broker's message size (a task with many
dependencies, each output carried whole).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from aios.schemas.events import envelope, now_ms
from aios.schemas.limits import MAX_CONTEXT_BYTES, excerpt_ref
from aios.streams.kafka import EventProducer, TopicReader
from aios.streams.orchestration.plan import parse_plan
from aios.streams.pipeline import running
from aios.streams.readmodels.outputs import output_fetcher
from aios.streams.readmodels.task_client import TaskClient, wait_project
from aios.streams.settings import Settings
from tests.integration.helpers import submit_and_wait, wait_until

pytestmark = pytest.mark.integration


def read(settings: Settings, short: str, timeout_s: float = 3) -> list[dict[str, Any]]:
    reader = TopicReader(settings, f"{settings.kafka.topic_prefix}.{short}", from_beginning=True)
    try:
        return [d.value for _, d in reader.events(timeout_s=timeout_s) if not isinstance(d, Exception)]
    finally:
        reader.close()


def task(**fields: Any) -> dict[str, Any]:
    """A schema-valid Task event as any Kafka producer could write it (no client-side checks)."""
    return {**envelope(), "task_id": "t1", "project_id": "poison", "role": "general", "description": "d",
            "priority": 0, "depends_on": [], "privacy": "normal", "submitted_by": "kcat", "metadata": {},
            **fields}


def attempt(task_id: str, project: str, output: str, attempt_no: int = 1) -> dict[str, Any]:
    return {**envelope(), "task_id": task_id, "project_id": project, "role": "general", "attempt": attempt_no,
            "status": "succeeded", "output": output, "submitted_at": now_ms()}


async def submit_plan(settings: Settings, project: str, tasks: list[dict[str, Any]]) -> None:
    client = TaskClient(settings)
    try:
        client.submit_plan(parse_plan(json.dumps({"project": project, "tasks": tasks}), settings.processing.roles))
    finally:
        client.close()


async def wait_dispatched(settings: Settings, task_ids: set[str], timeout_s: float = 60) -> list[dict[str, Any]]:
    def dispatched() -> list[dict[str, Any]] | None:
        found = [a for a in read(settings, "agent.general", 1) if a["task_id"] in task_ids]
        return found if {a["task_id"] for a in found} >= task_ids else None
    result: list[dict[str, Any]] = await wait_until(dispatched, timeout_s, every_s=0.5)
    return result


async def test_records_that_stopped_the_orchestrator_are_dead_lettered_and_it_goes_on(settings: Settings) -> None:
    p = settings.kafka.topic_prefix
    bad_json = json.dumps({"description": "hi", "priority": 5000}).encode()
    bad_tasks = {
        "priority": task(task_id="p1", priority=5000),
        "long": task(task_id="p2", description="x" * 20_001),
        "slash": task(task_id="a/b"),
        "control": task(task_id="p3", project_id="bad\x00project"),
    }
    producer = EventProducer(settings)
    producer.send_raw(f"{p}.tasks-json", bad_json, key="k")
    for value in bad_tasks.values():
        producer.send(f"{p}.tasks", "Task", value, key=value["project_id"])
    producer.flush()
    for run in range(2):  # a restart reads past them too: they were dead-lettered once, and stay so
        async with running(settings, ["orchestrator", "results", "agents", "json-ingress"]) as live:
            result = await submit_and_wait(settings, f"still works, run {run}", timeout_s=60)
            assert result["status"] == "succeeded"
            live.check()
    letters = read(settings, "dlq")
    by_offset = {(d["source_topic"], d["source_offset"]): d for d in letters}
    assert len(letters) == 5 == len(by_offset), [d["error"] for d in letters]
    ingress = by_offset[(f"{p}.tasks-json", 0)]
    assert ingress["processor"] == "json-ingress" and ingress["payload"] == bad_json
    assert "priority: 5000 is not an integer in -1000..1000" in ingress["error"]
    reasons = {d["error"] for d in letters if d["processor"] == "orchestrator"}
    assert any("priority: 5000 is not an integer in -1000..1000" in r for r in reasons)
    assert any("description: 20001 characters; at most 20000" in r for r in reasons)
    assert any("task_id: 'a/b' is not an id" in r for r in reasons)
    assert any("project_id: 'bad\\x00project' is not an id" in r for r in reasons)


async def test_many_large_dependency_outputs_travel_as_excerpts_with_a_reference_to_the_whole(
        settings: Settings) -> None:
    # 300 dependencies of 5 kB each: 1.5 MB carried whole, over the broker's message size (librdkafka's
    # refusal was fatal inside the orchestrator's transaction). Excerpts keep the assignment small.
    p, n = settings.kafka.topic_prefix, 300
    settings = settings.replace(project_concurrency=n)  # all dispatched at once
    deps = [{"id": f"d{i}", "role": "general", "description": f"part {i}"} for i in range(n)]
    outputs = {f"d{i}": f"{i:04d}" + "é" * 2_500 for i in range(n)}  # 5,004 bytes of UTF-8 each
    async with running(settings, ["orchestrator", "results"]) as live:  # no agents: we answer for them
        await submit_plan(settings, "wide", [*deps, {"id": "all", "role": "general", "description": "merge",
                                                     "depends_on": list(outputs)}])
        await wait_dispatched(settings, set(outputs))
        producer = EventProducer(settings)
        for task_id, output in outputs.items():
            producer.send(f"{p}.attempts", "TaskResult", attempt(task_id, "wide", output), key="wide")
        producer.flush()
        [merge] = await wait_dispatched(settings, {"all"})
        live.check()
    context = merge["context"]
    assert set(context) == set(outputs)
    assert sum(len(v.encode()) for v in context.values()) <= MAX_CONTEXT_BYTES
    ref = excerpt_ref(context["d7"])
    assert ref is not None and ref.startswith(f"kafka://{p}.attempts/")
    assert context["d7"].startswith("0007é")
    # The tool's reader follows the reference to the whole output, for this project's task only.
    fetch = output_fetcher(settings, live.runtime.codec, "wide")
    assert await fetch("d7", ref) == outputs["d7"]
    assert await fetch("d8", ref) is None, "a reference to another task's attempt is not believed"
    assert await output_fetcher(settings, live.runtime.codec, "other")("d7", ref) is None
    assert await fetch("d7", "kafka://elsewhere/0/0") is None


async def test_an_attempt_whose_state_entry_cannot_fit_is_dead_lettered_not_half_applied(
        settings: Settings) -> None:
    # 250,000 NUL characters are 250 kB of output but 1.5 MB as the JSON of the task's state entry:
    # the failure comes at the end of the batch, where the orchestrator writes its state. The batch
    # is aborted and read again record by record to find the attempt at fault.
    p = settings.kafka.topic_prefix
    async with running(settings, ["orchestrator", "results"]) as live:
        await submit_plan(settings, "nul", [{"id": "a", "role": "general", "description": "a"},
                                            {"id": "b", "role": "general", "description": "b", "depends_on": ["a"]}])
        await wait_dispatched(settings, {"a"})
        producer = EventProducer(settings)
        producer.send(f"{p}.attempts", "TaskResult", attempt("a", "nul", "\x00" * 250_000), key="nul")
        producer.send(f"{p}.tasks", "Task", task(task_id="after", project_id="nul"), key="nul")
        producer.flush()

        def letter() -> dict[str, Any] | None:
            return next((d for d in read(settings, "dlq", 1) if d["source_topic"] == f"{p}.attempts"), None)
        dead = await wait_until(letter, 60, every_s=0.5)
        assert dead["error_type"] == "RecordTooLargeError" and "orchestrator-state" in dead["error"]
        # The task after it in the same batch was not lost with the abort: it is dispatched.
        await wait_dispatched(settings, {"after"})
        await asyncio.sleep(1)
        live.check()
    status = await asyncio.to_thread(wait_project_state, settings, "nul")
    assert {t["task_id"]: t["state"] for t in status["tasks"]}["a"] == "dispatched", "nothing half-applied"


def wait_project_state(settings: Settings, project: str) -> dict[str, Any]:
    statuses = [s for s in read(settings, "project-status") if s["project_id"] == project]
    if not statuses:
        return wait_project(settings, project, 1)
    return statuses[-1]
