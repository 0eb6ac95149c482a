"""Live tokens: the text of a call in flight, coalesced into TokenDelta events on ``<prefix>.tokens``.

Deltas arrive a word or so at a time; publishing each would be an event per token for every call in
flight. One :class:`TokenStream` per attempt buffers them and publishes what arrived at most once
per interval (the first delta at once, later ones when the interval has passed, by a timer), and the
rest when the step's stream ends. Not history and not exactly-once: a lost event costs a viewer a
few words, and the whole answer is on the TaskResult.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aios.schemas.events import envelope
from aios.streams.metrics import TOKEN_EVENTS

Emit = Callable[[dict[str, Any]], None]


class TokenStream:
    """Coalesces one attempt's streamed text into TokenDelta events, at most one per interval
    while it streams, and a last one (``done``) when each step ends."""

    def __init__(self, a: dict[str, Any], agent_id: str, interval_s: float, emit: Emit) -> None:
        self._a = a
        self._agent_id = agent_id
        self._interval_s = interval_s
        self._emit = emit
        self._loop = asyncio.get_running_loop()
        self._buffer: list[str] = []
        self._step = -1
        self._seq = 0
        self._last = -interval_s  # loop time of the last event: the first delta goes out at once
        self._timer: asyncio.TimerHandle | None = None
        self.events = 0

    def delta(self, step: int, text: str) -> None:
        """A piece of step ``step``'s answer (the runner's ``on_delta``)."""
        if step != self._step:
            if self._step >= 0:
                self._flush(done=True)
            self._step, self._seq = step, 0
        self._buffer.append(text)
        now = self._loop.time()
        if now - self._last >= self._interval_s:
            self._flush()
        elif self._timer is None:
            self._timer = self._loop.call_later(self._last + self._interval_s - now, self._flush)

    def close(self) -> None:
        """The attempt ended: publish what is left as the last event of its step."""
        if self._step >= 0:
            self._flush(done=True)
            self._step = -1

    def _flush(self, done: bool = False) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._buffer and not done:
            return
        a = self._a
        self._emit({
            **envelope(a["trace_id"]), "task_id": a["task_id"], "project_id": a["project_id"],
            "attempt": a["attempt"], "step": self._step, "seq": self._seq, "text": "".join(self._buffer),
            "done": done, "agent_id": self._agent_id,
        })
        TOKEN_EVENTS.inc()
        self.events += 1
        self._buffer = []
        self._seq += 1
        self._last = self._loop.time()
