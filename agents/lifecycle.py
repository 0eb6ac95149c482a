"""An agent worker's lifecycle: starting → ready ⇄ busy → draining → stopped (or failed).

Pure state, free of Kafka: ``streams`` publishes :meth:`Lifecycle.status` as AgentStatus events
on the compacted agents topic, and asks :meth:`begin` before it starts a task, so a draining
worker takes no new work but finishes what it holds.
"""

from __future__ import annotations

import asyncio
import enum
import socket
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from aios.schemas.errors import AiosError
from aios.schemas.events import envelope, now_ms


class State(enum.StrEnum):
    STARTING = "starting"
    READY = "ready"
    BUSY = "busy"
    DRAINING = "draining"
    STOPPED = "stopped"
    FAILED = "failed"


_ALLOWED: dict[State, frozenset[State]] = {
    State.STARTING: frozenset({State.READY, State.BUSY, State.DRAINING, State.FAILED}),
    State.READY: frozenset({State.BUSY, State.DRAINING, State.FAILED}),
    State.BUSY: frozenset({State.READY, State.DRAINING, State.FAILED}),
    State.DRAINING: frozenset({State.STOPPED, State.FAILED}),
    State.STOPPED: frozenset(),
    State.FAILED: frozenset(),
}


class LifecycleError(AiosError):
    """A transition the lifecycle does not allow (a bug in the caller, e.g. work after stopping)."""


def package_version() -> str:
    try:
        return metadata.version("aios")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass
class Lifecycle:
    """One worker's state and the tasks it holds."""

    agent_id: str
    roles: tuple[str, ...]
    heartbeat_interval_s: float = 5.0
    version: str = field(default_factory=package_version)
    host: str = field(default_factory=socket.gethostname)
    state: State = State.STARTING
    started_at_ms: int = field(default_factory=now_ms)
    _in_flight: dict[str, int] = field(default_factory=dict)  # task id -> deliveries being worked on
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._idle.set()

    @property
    def accepting(self) -> bool:
        """Whether a new task may start (not draining, stopped or failed)."""
        return self.state in (State.STARTING, State.READY, State.BUSY)

    @property
    def in_flight(self) -> tuple[str, ...]:
        return tuple(self._in_flight)

    def ready(self) -> None:
        if self.state is State.STARTING:
            self._move(State.BUSY if self._in_flight else State.READY)

    def begin(self, task_id: str) -> bool:
        """Take ``task_id`` on; False when draining or stopped (the caller must leave it unacked)."""
        if not self.accepting:
            return False
        self._in_flight[task_id] = self._in_flight.get(task_id, 0) + 1
        self._idle.clear()
        if self.state is State.READY:
            self._move(State.BUSY)
        return True

    def end(self, task_id: str) -> None:
        left = self._in_flight.pop(task_id, 0) - 1
        if left > 0:
            self._in_flight[task_id] = left
        if not self._in_flight:
            self._idle.set()
            if self.state is State.BUSY:
                self._move(State.READY)

    def drain(self) -> None:
        """Stop taking work; in-flight tasks go on."""
        if self.state not in (State.DRAINING, State.STOPPED, State.FAILED):
            self._move(State.DRAINING)

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no task is in flight; False if some still were after ``timeout_s``."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def stop(self) -> None:
        self.drain()
        if self.state is State.DRAINING:
            self._move(State.STOPPED)

    def fail(self) -> None:
        if self.state not in (State.STOPPED, State.FAILED):
            self._move(State.FAILED)

    def status(self) -> dict[str, Any]:
        """The AgentStatus event for the current state."""
        return {
            **envelope(),
            "agent_id": self.agent_id,
            "role": self.roles[0] if self.roles else "",
            "roles": list(self.roles),
            "state": self.state.value,
            "in_flight": list(self._in_flight),
            "version": self.version,
            "host": self.host,
            "heartbeat_interval_ms": int(self.heartbeat_interval_s * 1000),
            "started_at": self.started_at_ms,
        }

    def _move(self, to: State) -> None:
        if to not in _ALLOWED[self.state]:
            raise LifecycleError(f"agent {self.agent_id}: {self.state.value} -> {to.value} is not allowed")
        self.state = to
