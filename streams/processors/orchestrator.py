"""The skeleton orchestrator: every task goes to its role's topic as an Assignment."""

from __future__ import annotations

import time
from typing import Any

import faust

from schemas.errors import SchemaError
from schemas.events import envelope
from streams.metrics import EVENTS, PROCESSING
from streams.processors.common import dead_letter, decode_or_error, raw_topic, send
from streams.runtime import Runtime

NAME = "orchestrator"


def assignment_for(task: dict[str, Any], attempt: int = 1) -> dict[str, Any]:
    return {
        **envelope(task["trace_id"]),
        "task_id": task["task_id"],
        "project_id": task["project_id"],
        "role": task["role"],
        "description": task["description"],
        "attempt": attempt,
        "priority": task["priority"],
        "privacy": task["privacy"],
        "context": {},
        "submitted_at": task["timestamp"],
    }


def unknown_role_result(task: dict[str, Any], roles: tuple[str, ...]) -> dict[str, Any]:
    """A task no role can take fails visibly instead of waiting forever."""
    return {
        **envelope(task["trace_id"]),
        "task_id": task["task_id"],
        "project_id": task["project_id"],
        "role": task["role"],
        "attempt": 0,
        "status": "failed",
        "output": "",
        "error": f"unknown role {task['role']!r}; this deployment runs: {', '.join(roles)} (AIOS_ROLES)",
        "agent_id": NAME,
        "submitted_at": task["timestamp"],
    }


def register(app: faust.App, rt: Runtime) -> None:
    roles = rt.settings.roles

    async def orchestrate(stream: Any) -> None:
        async for event in stream.events():
            started = time.perf_counter()
            task = decode_or_error(rt, event.value, "Task")
            if isinstance(task, SchemaError):
                await dead_letter(app, rt, event.message, NAME, task)
                EVENTS.labels(NAME, "dead_letter").inc()
                continue
            if task["role"] not in roles:
                await send(app, rt, rt.topics.results, "TaskResult", unknown_role_result(task, roles), task["task_id"])
                EVENTS.labels(NAME, "unknown_role").inc()
                continue
            topic = rt.topics.role(task["role"])
            await send(app, rt, topic, "Assignment", assignment_for(task), task["task_id"])
            EVENTS.labels(NAME, "assigned").inc()
            PROCESSING.labels(NAME).observe(time.perf_counter() - started)

    app.agent(raw_topic(app, rt.topics.tasks), name=NAME)(orchestrate)
