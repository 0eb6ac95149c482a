"""The API's live view starts on topics that already hold transactional results."""

from __future__ import annotations

import asyncio

import pytest

from aios.api.view import LiveView
from aios.streams.pipeline import running
from aios.streams.settings import Settings
from tests.integration.helpers import submit_and_wait

pytestmark = pytest.mark.integration


async def test_a_restarted_view_catches_up_past_transaction_markers(settings: Settings) -> None:
    # Results and project statuses are written in transactions: their last offset is a commit
    # marker no record carries, so "read up to the high watermark" alone would never finish.
    async with running(settings, ["orchestrator", "results", "agents"]):
        result = await submit_and_wait(settings, "say hello")
    view = LiveView(settings)
    await asyncio.to_thread(view.start, 20)
    try:
        record = view.find_task(result["task_id"], lambda p: True)
        assert record is not None and record.state == "succeeded"
    finally:
        view.close()
