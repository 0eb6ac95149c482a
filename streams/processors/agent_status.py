"""The agent worker's live status on the compacted agents topic: heartbeats and graceful drain.

A worker publishes AgentStatus (keyed by agent id) when it starts, every heartbeat interval, and
on each change that matters to a reader: draining, stopped, failed; after ``stopped`` it tombstones
its key, so the live registry forgets it. On shutdown it drains: it
stops fetching, lets the assignments in flight finish (up to AIOS_DRAIN_TIMEOUT_S), leaves the
ones it had fetched but not started uncommitted for the partition's next owner, flushes the
outputs, commits, and only then publishes ``stopped``. The heartbeat is a task of its own on the
event loop: a window full of slow LLM calls does not hold it back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aios.agents.lifecycle import Lifecycle, State
from aios.streams.engine.records import log
from aios.streams.engine.runtime import Runtime
from aios.streams.metrics import AGENT_STATUS


class StatusWorker(Protocol):
    """What the lifecycle needs of the worker it describes."""

    def send_event(self, topic: str, record: str, value: dict[str, Any], key: str) -> None: ...

    def send_tombstone(self, topic: str, key: str) -> None: ...

    async def drain(self, timeout_s: float) -> list[Any]: ...

    async def flush(self, timeout_s: float) -> None: ...


def publish(rt: Runtime, worker: StatusWorker, lifecycle: Lifecycle) -> None:
    status = lifecycle.status()
    worker.send_event(rt.topics.agents, "AgentStatus", status, lifecycle.agent_id)
    AGENT_STATUS.labels(status["state"]).inc()


def attach(rt: Runtime, worker: StatusWorker) -> tuple[Lifecycle, Callable[[], Awaitable[None]]]:
    """Create this worker's lifecycle and register its drain; returns it and the heartbeat to run."""
    lifecycle = Lifecycle(rt.agent_id, rt.settings.processing.roles, rt.settings.processing.heartbeat_interval_s)

    async def heartbeat() -> None:
        publish(rt, worker, lifecycle)  # starting
        lifecycle.ready()
        while lifecycle.state not in (State.STOPPED, State.FAILED):  # draining goes on beating
            publish(rt, worker, lifecycle)
            await asyncio.sleep(lifecycle.heartbeat_interval_s)

    async def drain() -> None:
        lifecycle.drain()
        publish(rt, worker, lifecycle)
        timeout_s = rt.settings.processing.drain_timeout_s
        left = await worker.drain(timeout_s)
        if left:
            log.warning("agents: %d task(s) still in flight after %.0fs of draining: %s (left uncommitted for "
                        "the next worker)", len(left), timeout_s, ", ".join(lifecycle.in_flight))
        lifecycle.stop()
        publish(rt, worker, lifecycle)
        # Then forget this worker on the compacted topic: readers drop it, compaction removes it.
        # (`stopped` stays in the history; a crashed worker is forgotten by the registry later.)
        worker.send_tombstone(rt.topics.agents, lifecycle.agent_id)
        await worker.flush(10.0)

    async def failed() -> None:
        lifecycle.fail()
        try:  # best effort: the broker may be what failed
            publish(rt, worker, lifecycle)
            await worker.flush(5.0)
        except Exception as exc:  # any failure here: the original one is what propagates
            log.warning("agents: could not publish the failed status: %r", exc)

    rt.drainers.append(drain)
    rt.on_failure.append(failed)
    return lifecycle, heartbeat
