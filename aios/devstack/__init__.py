"""The local dev stack: the toolchain, a KRaft Kafka broker and Redis, and process supervision.

``up``, ``down`` and ``status`` are what ``aios dev`` runs; the modules behind them say how.
"""

from aios.devstack.kafka_broker import new_cluster_id, render_server_properties
from aios.devstack.processes import ServiceStatus, StackReport, tail
from aios.devstack.stack import down, status, up
from aios.devstack.toolchain import find_java, parse_java_major

__all__ = ["ServiceStatus", "StackReport", "down", "find_java", "new_cluster_id", "parse_java_major",
           "render_server_properties", "status", "tail", "up"]
