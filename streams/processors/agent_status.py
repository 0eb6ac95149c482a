"""The agent worker's live status on the compacted agents topic: heartbeats and graceful drain.

A worker publishes AgentStatus (keyed by agent id) when it starts, every heartbeat interval, and
on each change that matters to a reader: draining, stopped, failed; after ``stopped`` it tombstones its
key, so the live registry forgets it. On shutdown it drains: it
stops fetching, hands every assignment it had fetched but not started back to its partition (faust
acknowledges an event however its handler ends, so holding one would lose it), lets the ones in
flight finish, flushes their outputs, and only then publishes ``stopped``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust

from aios.agents.lifecycle import Lifecycle
from aios.streams.engine.records import log, send
from aios.streams.engine.runtime import Runtime
from aios.streams.metrics import AGENT_STATUS


async def publish(app: faust.App, rt: Runtime, lifecycle: Lifecycle) -> None:
    status = lifecycle.status()
    await send(app, rt, rt.topics.agents, "AgentStatus", status, lifecycle.agent_id)
    AGENT_STATUS.labels(status["state"]).inc()


def attach(app: faust.App, rt: Runtime) -> Lifecycle:
    """Create this worker's lifecycle, start its heartbeat and register its drain."""
    lifecycle = Lifecycle(rt.agent_id, rt.settings.processing.roles, rt.settings.processing.heartbeat_interval_s)

    async def heartbeat() -> None:
        await publish(app, rt, lifecycle)  # starting
        lifecycle.ready()
        while True:
            await publish(app, rt, lifecycle)
            await asyncio.sleep(lifecycle.heartbeat_interval_s)

    async def drain() -> None:
        lifecycle.drain()
        # No more fetching: what is handed back must go to the partition's next owner, not to us.
        app.consumer.pause_partitions(app.consumer.assignment())
        await publish(app, rt, lifecycle)
        if not await lifecycle.wait_idle(rt.settings.processing.drain_timeout_s):
            log.warning("agents: %d task(s) still in flight after %.0fs of draining: %s",
                        len(lifecycle.in_flight), rt.settings.processing.drain_timeout_s, ", ".join(lifecycle.in_flight))
        lifecycle.stop()
        await _publish_and_flush(app, rt, lifecycle)  # in-flight outputs and `stopped`, before the commit
        # Then forget this worker on the compacted topic: readers drop it, compaction removes it.
        # (`stopped` stays in the history; a crashed worker is forgotten by the orchestrator later.)
        await app.producer.send(rt.topics.agents, lifecycle.agent_id.encode(), None, partition=None,
                                timestamp=None, headers=None)
        await app.producer.flush()

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


async def hand_back(app: faust.App, event: Any) -> None:
    """Put an assignment this draining worker will not start back on its partition, same key and
    bytes, for the partition's next owner; the original is then acknowledged with the rest."""
    message = event.message
    await app.producer.send(message.topic, message.key, message.value, partition=message.partition,
                            timestamp=None, headers=None)
    log.info("agents: draining; handed %s@%s/%s back", message.topic, message.partition, message.offset)
