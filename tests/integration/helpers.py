"""Small helpers the integration tests share."""

from __future__ import annotations

import asyncio
from typing import Any

from streams.client import TaskClient, build_task
from streams.settings import Settings


async def submit_and_wait(settings: Settings, description: str, timeout_s: float = 30, **task: Any) -> dict[str, Any]:
    """Produce one task and return its TaskResult (the processors must be running)."""
    client = TaskClient(settings)
    try:
        client.watch_results()
        submitted = build_task(description, **task)
        client.submit(submitted)
        found = await asyncio.to_thread(client.wait, [submitted["task_id"]], timeout_s)
    finally:
        client.close()
    result = found[submitted["task_id"]].result
    result["_task"] = submitted
    return result
