"""Cancelling a task an agent is working on: the call in flight is interrupted (its HTTP stream
closed), and no further step or tool call starts.

The worker holds one :class:`Cancellation` per task in flight and fires it when a cancel reaches
it; the runner checks it before every step and tool call, and runs each LLM call through
:meth:`Cancellation.run`, so that firing it cancels the call's own asyncio task. The SDKs close the
response when their stream is cancelled, so the server sees the connection go.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from aios.agents.errors import TaskCancelledError

T = TypeVar("T")


class Cancellation:
    """A cancel signal for one task attempt, fired at most once."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.fired_at: float | None = None  # monotonic, for the cancel latency
        self._call: asyncio.Future[Any] | None = None

    @property
    def cancelled(self) -> bool:
        return self.reason is not None

    def cancel(self, reason: str) -> None:
        """Stop the task: interrupt the call in flight, if any; later steps will not start."""
        if self.reason is not None:
            return
        self.reason = reason
        self.fired_at = time.monotonic()
        if self._call is not None:
            self._call.cancel()

    def check(self) -> None:
        """Raise ``TaskCancelledError`` once cancelled (before a step or tool call starts)."""
        if self.reason is not None:
            raise TaskCancelledError(self.reason)

    async def run(self, call: Awaitable[T]) -> T:
        """Await ``call`` in a task of its own that :meth:`cancel` interrupts."""
        self.check()
        task = asyncio.ensure_future(call)
        self._call = task
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            # Our own cancel, not the worker being stopped: the caller sees a cancelled task.
            if task.cancelled() and self.reason is not None and (current is None or not current.cancelling()):
                raise TaskCancelledError(self.reason) from None
            raise
        finally:
            self._call = None
