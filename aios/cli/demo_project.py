"""The demo: a small sample project run through the whole embedded pipeline in this process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aios.agents.llm.factory import describe_choice
from aios.connectors.context.windows import context_key
from aios.streams.engine.runtime import llm_config
from aios.streams.errors import OrchestrationError
from aios.streams.pipeline import running
from aios.streams.processors import PROCESSORS
from aios.streams.readmodels.task_client import Delivered, TaskClient, build_task, wait_project
from aios.streams.settings import Settings

SAMPLE_PROJECT = [
    "Outline the HTTP API of a URL shortener: endpoints, request and response bodies.",
    "Design the storage schema for short links, click counts and owners.",
    "List the failure modes of the redirect path and how to test each.",
    "Write the README introduction for the URL shortener in three sentences.",
    "Estimate the monthly cost of serving 10 million redirects.",
]
# A goal planned in sprints: the offline planner's example plan has two milestones, a review closes
# each and its re-plan (the contract's second example) changes the second sprint's work.
SPRINT_GOAL = "Build a URL shortener, in sprints"
SPRINT_ROLES = ("planner", "reviewer", "backend", "qa")


def demo_settings(settings: Settings) -> Settings:
    """The demo's roles: the configured ones and those the sprint example needs."""
    return settings.replace(roles=tuple(dict.fromkeys((*settings.processing.roles, *SPRINT_ROLES))))


@dataclass
class DemoReport:
    project: str
    llm: str
    results: list[dict[str, Any]] = field(default_factory=list)
    redis_key: str = ""
    redis_turns: int = 0
    clickhouse_engine: str = ""
    clickhouse_rows: int = 0
    clickhouse_rows_by_type: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    sprint_project: str = ""
    sprint_status: dict[str, Any] = field(default_factory=dict)  # its final ProjectStatus


async def run_demo(settings: Settings, *, on_result: Callable[[Delivered], None] | None = None,
                   timeout_s: float = 120.0) -> DemoReport:
    """Submit the sample project, wait for every result, then read back Redis and ClickHouse."""
    started = time.monotonic()
    project = f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    report = DemoReport(project=project, llm=describe_choice(llm_config(settings)))
    async with running(settings, list(PROCESSORS)) as live:
        client = TaskClient(settings)
        try:
            await asyncio.to_thread(client.watch_results)
            tasks = [build_task(text, role=settings.processing.roles[0], project=project, submitted_by="demo")
                     for text in SAMPLE_PROJECT]
            for task in tasks:
                client.submit(task, flush=False)
            report.sprint_project = f"{project}-sprints"
            if set(SPRINT_ROLES) <= set(settings.processing.roles):
                client.submit_goal(report.sprint_project, SPRINT_GOAL, submitted_by="demo")
            await asyncio.to_thread(client.producer.flush)
            ids = [t["task_id"] for t in tasks]
            found = await asyncio.to_thread(client.wait, ids, timeout_s, on_result)
            if set(SPRINT_ROLES) <= set(settings.processing.roles):
                report.sprint_status = await asyncio.to_thread(wait_project, settings, report.sprint_project, timeout_s)
        finally:
            client.close()
        rt = live.runtime
        report.redis_key = context_key(settings.kafka.topic_prefix, "project", project)
        report.redis_turns = await _wait_for(
            lambda: _llen(rt, report.redis_key), len(tasks), timeout_s=30)
        # Per task: Task, Assignment, the agent's pickup (started) and attempt, the terminal TaskResult,
        # MemoryEvent, LlmCall (plus ProjectStatus snapshots). Wait until the sink has stored the
        # slowest of them.
        def least_stored() -> int:
            c = rt.store.counts_by_type(project_id=project)
            need = {"Task": 1, "Assignment": 1, "TaskResult": 3, "MemoryEvent": 1, "LlmCall": 1}
            return min(c.get(kind, 0) // per for kind, per in need.items())

        await _wait_for(lambda: asyncio.to_thread(least_stored), len(tasks), timeout_s=30)
        report.clickhouse_rows = await asyncio.to_thread(rt.store.count_events, project_id=project)
        report.clickhouse_engine = rt.store.engine
        report.clickhouse_rows_by_type = await asyncio.to_thread(lambda: rt.store.counts_by_type(project_id=project))
        for task in tasks:
            d = found[task["task_id"]]
            report.results.append({
                "task_id": task["task_id"], "description": task["description"], "status": d.result["status"],
                "provider": d.result["provider"], "model": d.result["model"], "output": d.result["output"],
                "error": d.result["error"], "kafka": {"topic": client.topics.results,
                                                      "partition": d.partition, "offset": d.offset},
                "clickhouse_rows": await asyncio.to_thread(rt.store.count_events, task_id=task["task_id"]),
            })
    report.seconds = round(time.monotonic() - started, 2)
    return report


async def _llen(rt: Any, key: str) -> int:
    return int(await rt.context._redis.llen(key))


async def _wait_for(probe: Callable[[], Any], want: int, timeout_s: float) -> int:
    """Poll an async probe until it reaches ``want``; the sink and memory run asynchronously."""
    deadline = time.monotonic() + timeout_s
    value = 0
    while time.monotonic() < deadline:
        value = int(await probe())
        if value >= want:
            return value
        await asyncio.sleep(0.1)
    raise OrchestrationError(f"expected {want}, saw {value} after {timeout_s:.0f}s")
