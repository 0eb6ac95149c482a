"""The stream processors, registered in one place (no discovery through import side effects)."""

from __future__ import annotations

from aios.streams.engine.app import Register
from aios.streams.processors import (
    agent_runner,
    history_sink,
    json_bridge,
    memory,
    orchestrator,
    results_committer,
)

PROCESSORS: dict[str, Register] = {
    "orchestrator": orchestrator.register,
    "results": results_committer.register,
    "agents": agent_runner.register,
    "memory": memory.register,
    "history": history_sink.register,
    "json-ingress": json_bridge.register_ingress,
    "json-egress": json_bridge.register_egress,
}

__all__ = ["PROCESSORS", "Register"]
