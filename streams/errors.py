"""Errors of the streaming layer (see schemas/errors.py for the whole tree)."""

from __future__ import annotations

from aios.schemas.errors import AiosError


class OrchestrationError(AiosError):
    """Processors, topics, or the pipeline could not do what was asked."""


class StackError(OrchestrationError):
    """The local stack (Kafka, Redis) is missing something or failed to start; says what to do."""


class KafkaError(OrchestrationError):
    """A Kafka client or admin call failed; wraps confluent-kafka's errors."""
