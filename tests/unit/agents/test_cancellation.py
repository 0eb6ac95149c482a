"""Cancelling a running task: the call in flight is interrupted, no further step or tool call starts."""

from __future__ import annotations

import asyncio

import pytest

from aios.agents.cancellation import Cancellation
from aios.agents.errors import TaskCancelledError
from aios.agents.llm.base import ChatRequest, ChatResponse, OnDelta, Usage
from aios.agents.runner import CANCELLED, AgentTask, run_task


class Slow:
    """A provider whose answer takes ``seconds``; it records the calls that started and ended."""

    name, model, offline = "openai", "gpt-4o-mini", False

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = 0
        self.interrupted = 0

    async def complete(self, request: ChatRequest, *, on_delta: OnDelta | None = None) -> ChatResponse:
        self.started += 1
        try:
            if on_delta is not None:
                on_delta("partial ")
            await asyncio.sleep(self.seconds)
        except asyncio.CancelledError:
            self.interrupted += 1
            raise
        return ChatResponse("done", self.name, self.model, Usage(1, 1), 1.0, 1.0)

    async def aclose(self) -> None:
        pass


async def test_a_cancel_interrupts_the_call_and_the_outcome_is_cancelled() -> None:
    provider, cancel, deltas = Slow(30), Cancellation(), []
    task = AgentTask(task_id="t", project_id="p", role="general", description="wait")
    running = asyncio.create_task(run_task(provider, task, cancel=cancel, on_delta=lambda step, t: deltas.append(t)))
    await asyncio.sleep(0.05)
    cancel.cancel("by the operator")
    outcome = await asyncio.wait_for(running, 1)
    assert not outcome.ok and outcome.error_type == CANCELLED and "by the operator" in (outcome.error or "")
    assert provider.started == 1 and provider.interrupted == 1
    assert deltas == ["partial "]


async def test_no_step_starts_after_a_cancel() -> None:
    provider, cancel = Slow(0), Cancellation()
    cancel.cancel("budget spent")
    task = AgentTask(task_id="t", project_id="p", role="general", description="never")
    outcome = await run_task(provider, task, cancel=cancel)
    assert outcome.error_type == CANCELLED and provider.started == 0


async def test_stopping_the_worker_is_not_mistaken_for_a_cancel() -> None:
    cancel = Cancellation()
    running = asyncio.create_task(cancel.run(asyncio.sleep(30)))
    await asyncio.sleep(0.01)
    running.cancel()  # the worker's own shutdown: it propagates as CancelledError
    with pytest.raises(asyncio.CancelledError):
        await running
    with pytest.raises(TaskCancelledError):
        cancel.cancel("later")
        cancel.check()
