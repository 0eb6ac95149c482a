"""The local dev stack: the toolchain, a KRaft Kafka broker and Redis, and process supervision.

``up``, ``down`` and ``status`` are what ``aios dev`` runs; the modules behind them say how.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aios.devstack.kafka_broker import new_cluster_id, render_server_properties
    from aios.devstack.processes import ServiceStatus, StackReport, tail
    from aios.devstack.stack import down, status, up
    from aios.devstack.toolchain import find_java, parse_java_major

# Imported on first use: every `aios` command imports this package (aios.devstack.parent), and the
# stack's modules (redis, the broker's settings) cost a third of a second it mostly does not need.
_EXPORTS = {"new_cluster_id": "kafka_broker", "render_server_properties": "kafka_broker",
            "ServiceStatus": "processes", "StackReport": "processes", "tail": "processes",
            "down": "stack", "status": "stack", "up": "stack", "find_java": "toolchain", "parse_java_major": "toolchain"}

__all__ = ["ServiceStatus", "StackReport", "down", "find_java", "new_cluster_id", "parse_java_major",
           "render_server_properties", "status", "tail", "up"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
