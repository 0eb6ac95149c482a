"""Watermark queries ride out a partition's leader election, and fail at once on anything else."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from aios.streams.kafka import watermarks


class Consumer:
    """Answers get_watermark_offsets with the given errors first, then (3, 9)."""

    def __init__(self, *errors: int) -> None:
        self.errors = list(errors)
        self.calls = 0

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float) -> tuple[int, int]:
        self.calls += 1
        if self.errors:
            raise KafkaException(KafkaError(self.errors.pop(0)))
        return 3, 9


def test_a_moving_leader_is_asked_again() -> None:
    consumer = Consumer(KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE)
    assert watermarks(consumer, TopicPartition("t", 0)) == (3, 9)  # type: ignore[arg-type]
    assert consumer.calls == 3


def test_other_errors_fail_at_once() -> None:
    consumer = Consumer(KafkaError._TRANSPORT)
    with pytest.raises(KafkaException):
        watermarks(consumer, TopicPartition("t", 0))  # type: ignore[arg-type]
    assert consumer.calls == 1


def test_a_leader_that_never_comes_fails_after_the_wait() -> None:
    consumer = Consumer(*[KafkaError.NOT_LEADER_FOR_PARTITION] * 100)
    with pytest.raises(KafkaException, match="NOT_LEADER"):
        watermarks(consumer, TopicPartition("t", 0), wait_s=0.5)  # type: ignore[arg-type]
    assert 2 <= consumer.calls <= 5
