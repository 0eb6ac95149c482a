"""What happens when a record fails: decided here, once, for every processor.

The model is Kafka Streams' exception handlers (deserialization, processing, production): each
failure has one place that decides whether the stream continues. Here the answer depends on whose
fault the failure is, told by the exception's type:

- the record's (it does not decode, breaks a limit, makes a handler raise, would build an output
  a topic refuses): **dead-letter** it, with the processor, the reason and the original bytes, and
  move on. Running it again would fail again; crashing would fail again at every restart.
- a server's (``UnavailableError``: the schema registry, Redis, ClickHouse, Qdrant cannot be
  reached): **retry** the same record after a backoff, for as long as it takes. The record is
  fine; dead-lettering it would lose valid work.
- the process's (its Kafka client is fenced or broken, it is being cancelled): **fatal**, the
  process stops and its supervisor restarts it; uncommitted records are read again.

The runtime models apply the verdict: ``records.guarded`` for faust agents, ``BatchProcessor``
(record by record once a batch fails) and ``TransactionalProcessor`` (the failing record is
dead-lettered when its batch is read again, so no half-applied record reaches the state) and
``ConcurrentProcessor`` (the agent worker: a retried record stays in flight, uncommitted).
"""

from __future__ import annotations

import asyncio
import enum
import logging

from aiokafka.errors import KafkaError as AioKafkaError
from confluent_kafka import KafkaException

from aios.schemas.errors import UnavailableError
from aios.streams.errors import KafkaError
from aios.streams.metrics import RECORD_FAILURES

log = logging.getLogger("aios.streams")


class Verdict(enum.Enum):
    DEAD_LETTER = "dead_letter"  # the record's fault: to the DLQ with the reason, the offset moves on
    RETRY = "retry"  # a server's fault: wait, then the same record again
    FATAL = "fatal"  # the process's: stop, and let the supervisor restart it


def decide(exc: BaseException) -> Verdict:
    """Whose fault ``exc`` is, and so what happens to the record that raised it."""
    if isinstance(exc, UnavailableError):
        return Verdict.RETRY
    if not isinstance(exc, Exception) or isinstance(exc, MemoryError):
        return Verdict.FATAL  # cancellation, interpreter exit: not about the record at all
    if isinstance(exc, KafkaError | KafkaException | AioKafkaError):
        return Verdict.FATAL  # the client is broken or fenced; the record is read again after a restart
    return Verdict.DEAD_LETTER


def verdict_for(processor: str, exc: BaseException) -> Verdict:
    """:func:`decide`, counted in ``aios_record_failures_total`` and logged."""
    verdict = decide(exc)
    RECORD_FAILURES.labels(processor, verdict.value, type(exc).__name__).inc()
    log.debug("%s: a record failed (%s: %s): %s", processor, type(exc).__name__, exc, verdict.value)
    return verdict


class Backoff:
    """Waits that double from ``base_s`` to ``max_s`` while a server stays down; ``reset`` after success."""

    def __init__(self, base_s: float = 0.2, max_s: float = 10.0) -> None:
        self.base_s, self.max_s = base_s, max_s
        self.next_s = base_s

    def delay(self) -> float:
        """The wait before the next try (and double it for the one after)."""
        delay, self.next_s = self.next_s, min(self.next_s * 2, self.max_s)
        return delay

    async def wait(self, what: str, exc: BaseException) -> None:
        delay = self.delay()
        log.warning("%s: %s; retrying in %.1fs", what, exc, delay)
        await asyncio.sleep(delay)

    def reset(self) -> None:
        self.next_s = self.base_s
