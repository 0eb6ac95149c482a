"""Live tokens are coalesced: at most one event per interval while a call streams, the rest at its end."""

from __future__ import annotations

import asyncio
from typing import Any

from aios.streams.processors.live_tokens import TokenStream

A = {"trace_id": "tr", "task_id": "t", "project_id": "p", "attempt": 1}


async def test_deltas_are_coalesced_per_interval_and_add_up() -> None:
    events: list[dict[str, Any]] = []
    stream = TokenStream(A, "agent-1", 0.05, events.append)
    loop = asyncio.get_running_loop()
    times = []
    for i in range(40):  # a delta every 5 ms for 200 ms
        stream.delta(0, f"w{i} ")
        times.append(loop.time())
        await asyncio.sleep(0.005)
    ended = loop.time()
    stream.delta(1, "second step")
    stream.close()
    first_step = [e for e in events if e["step"] == 0]
    assert "".join(e["text"] for e in first_step) == "".join(f"w{i} " for i in range(40))
    # The first delta at once, then at most one event per 50 ms interval until the step ended, plus
    # the last (done): a loaded machine stretches the 5 ms sleeps, so the bound follows the time the
    # step really took, up to its end (the last sleep included: a timer may fire in it).
    intervals = (ended - times[0]) / 0.05
    assert 3 <= len(first_step) <= intervals + 2, (len(first_step), intervals)
    assert [e["seq"] for e in first_step] == list(range(len(first_step)))
    assert first_step[-1]["done"] and not any(e["done"] for e in first_step[:-1])
    assert [(e["step"], e["text"], e["done"]) for e in events if e["step"] == 1] == [(1, "second step", True)]
    assert {e["task_id"] for e in events} == {"t"} and {e["agent_id"] for e in events} == {"agent-1"}
