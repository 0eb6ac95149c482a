"""The agent worker's live status on the compacted agents topic: heartbeats and graceful drain.

A worker publishes AgentStatus (keyed by agent id) when it starts, every heartbeat interval, and
on each change that matters to a reader: draining, stopped, failed. On shutdown it drains: no new
assignment starts (it stays unacknowledged, so another worker gets it), the ones in flight finish
and their outputs are flushed, and only then does it publish ``stopped``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust

from agents.lifecycle import Lifecycle
from streams.metrics import AGENT_STATUS
from streams.processors.common import log, send
from streams.runtime import Runtime


async def publish(app: faust.App, rt: Runtime, lifecycle: Lifecycle) -> None:
    status = lifecycle.status()
    await send(app, rt, rt.topics.agents, "AgentStatus", status, lifecycle.agent_id)
    AGENT_STATUS.labels(status["state"]).inc()


def attach(app: faust.App, rt: Runtime) -> Lifecycle:
    """Create this worker's lifecycle, start its heartbeat and register its drain."""
    lifecycle = Lifecycle(rt.agent_id, rt.settings.roles, rt.settings.heartbeat_interval_s)

    async def heartbeat() -> None:
        await publish(app, rt, lifecycle)  # starting
        lifecycle.ready()
        while True:
            await publish(app, rt, lifecycle)
            await asyncio.sleep(lifecycle.heartbeat_interval_s)

    async def drain() -> None:
        lifecycle.drain()
        await publish(app, rt, lifecycle)
        if not await lifecycle.wait_idle(rt.settings.drain_timeout_s):
            log.warning("agents: %d task(s) still in flight after %.0fs of draining: %s",
                        len(lifecycle.in_flight), rt.settings.drain_timeout_s, ", ".join(lifecycle.in_flight))
        lifecycle.stop()
        await publish(app, rt, lifecycle)
        await app.producer.flush()  # the in-flight tasks' outputs and `stopped`, before offsets commit

    async def failed() -> None:
        lifecycle.fail()
        try:  # best effort: the broker may be what failed
            await asyncio.wait_for(_publish_and_flush(app, rt, lifecycle), timeout=5)
        except Exception as exc:  # any failure here: the original one is what propagates
            log.warning("agents: could not publish the failed status: %r", exc)

    app.task(heartbeat)
    rt.drainers.append(drain)
    rt.on_failure.append(failed)
    return lifecycle


async def _publish_and_flush(app: faust.App, rt: Runtime, lifecycle: Lifecycle) -> None:
    await publish(app, rt, lifecycle)
    await app.producer.flush()


async def hold(lifecycle: Lifecycle, event: Any) -> None:
    """Never finish handling ``event``: a draining worker leaves it unacknowledged for the next
    owner of the partition. The app's stop cancels this wait."""
    log.info("agents: draining; %s stays for another worker", getattr(event, "key", b""))
    await asyncio.Event().wait()
