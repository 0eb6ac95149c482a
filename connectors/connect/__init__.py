"""Kafka Connect: the JSON bridges' conversions and the connector configs beside them."""

from connectors.connect.json_bridge import InvalidJsonTaskError, result_to_json, task_from_json

__all__ = ["InvalidJsonTaskError", "result_to_json", "task_from_json"]
