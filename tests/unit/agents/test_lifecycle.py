"""The worker lifecycle: states, tasks in flight, draining."""

from __future__ import annotations

import pytest

from aios.agents.lifecycle import Lifecycle, LifecycleError, State


async def test_ready_busy_draining_stopped() -> None:
    life = Lifecycle("a-1", ("backend", "qa"), heartbeat_interval_s=2)
    assert life.state is State.STARTING and life.accepting
    life.ready()
    assert life.begin("t1") and life.begin("t1") and life.state is State.BUSY  # a duplicate delivery
    life.end("t1")
    assert life.in_flight == ("t1",), "still held by the other delivery"
    life.drain()
    assert life.state is State.DRAINING and not life.begin("t2"), "draining takes no new work"
    assert not await life.wait_idle(0.01)
    life.end("t1")
    assert await life.wait_idle(0.01)
    life.stop()
    status = life.status()
    assert (status["state"], status["roles"], status["role"], status["in_flight"]) == ("stopped", ["backend", "qa"],
                                                                                     "backend", [])
    assert status["heartbeat_interval_ms"] == 2000 and status["version"] and status["host"]


def test_no_way_back_from_stopped_or_failed() -> None:
    life = Lifecycle("a-2", ("qa",))
    life.fail()
    assert life.state is State.FAILED and not life.begin("t")
    life.stop()  # already down: nothing to do
    assert life.state is State.FAILED
    stopped = Lifecycle("a-3", ("qa",))
    stopped.stop()
    with pytest.raises(LifecycleError, match="stopped -> ready"):
        stopped._move(State.READY)


def test_work_taken_before_the_first_heartbeat_makes_it_busy() -> None:
    life = Lifecycle("a-4", ("qa",))
    assert life.begin("t") and life.state is State.STARTING
    life.ready()
    assert life.state is State.BUSY
    life.end("t")
    assert life.state is State.READY
