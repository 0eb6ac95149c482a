"""The one place that decides what a failed record becomes, and the dead letter's bounds."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import KafkaConnectionError
from confluent_kafka import KafkaError as CKafkaError
from confluent_kafka import KafkaException
from pydantic import BaseModel, ValidationError

from aios.connectors.errors import StoreQueryError, StoreUnavailableError
from aios.schemas import limits
from aios.schemas.codec import Codec
from aios.schemas.errors import (
    ConfigError,
    InvalidRecordError,
    RecordTooLargeError,
    RegistryUnavailableError,
    UndecodableError,
)
from aios.schemas.jsonlimits import JsonTooDeepError
from aios.streams.engine.failures import Backoff, Verdict, decide
from aios.streams.engine.records import dead_letter_event
from aios.streams.errors import KafkaError
from aios.streams.kafka import make_codec, producer_config
from aios.streams.settings import load_settings
from aios.streams.topics import topic_specs


class _Model(BaseModel):
    n: int


def _validation_error() -> ValidationError:
    try:
        _Model.model_validate({"n": "x"})
    except ValidationError as exc:
        return exc
    raise AssertionError("unreachable")


@pytest.mark.parametrize(("exc", "verdict"), [
    # The record's fault: it never gets better by trying again.
    (UndecodableError("junk"), Verdict.DEAD_LETTER),
    (InvalidRecordError("Task", ["priority: 5000"]), Verdict.DEAD_LETTER),
    (RecordTooLargeError("2 MB"), Verdict.DEAD_LETTER),
    (JsonTooDeepError(64), Verdict.DEAD_LETTER),
    (_validation_error(), Verdict.DEAD_LETTER),
    (RecursionError("deep"), Verdict.DEAD_LETTER),
    (KeyError("missing"), Verdict.DEAD_LETTER),
    (StoreQueryError("ClickHouse refused the row"), Verdict.DEAD_LETTER),
    # A server's fault: wait, then the same record again.
    (RegistryUnavailableError("connection refused"), Verdict.RETRY),
    (StoreUnavailableError("Redis down"), Verdict.RETRY),
    # The process's: restart it, the record is read again.
    (KafkaError("fenced"), Verdict.FATAL),
    (KafkaException(CKafkaError(CKafkaError._FENCED)), Verdict.FATAL),
    (KafkaConnectionError(), Verdict.FATAL),
    (MemoryError(), Verdict.FATAL),
    (asyncio.CancelledError(), Verdict.FATAL),
])
def test_whose_fault_decides(exc: BaseException, verdict: Verdict) -> None:
    assert decide(exc) is verdict


def test_backoff_doubles_to_its_ceiling_and_starts_over_after_a_success() -> None:
    backoff = Backoff(base_s=0.5, max_s=3.0)
    assert [backoff.delay() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.reset()
    assert backoff.delay() == 0.5


def test_the_dead_letter_of_a_record_at_the_size_limit_still_fits_a_message() -> None:
    payload = b"\xff" * limits.DEFAULT_MAX_MESSAGE_BYTES
    reasons = ["r" * 50_000] * 100
    letter = dead_letter_event("p.tasks", 0, 7, b"k" * 100_000, payload, "orchestrator", ValueError("e" * 50_000),
                               reasons)
    assert letter["payload"] == payload[: limits.MAX_DEAD_LETTER_PAYLOAD_BYTES]
    assert letter["errors"][-1] == (f"payload cut to its first {limits.MAX_DEAD_LETTER_PAYLOAD_BYTES} of "
                                    f"{len(payload)} bytes")
    assert len(letter["errors"]) == limits.MAX_DEAD_LETTER_ERRORS + 1
    Codec().encode("DeadLetter", letter)  # under the codec's own size check


def test_an_event_over_the_message_size_is_refused_with_its_size() -> None:
    codec = Codec(max_message_bytes=limits.MIN_MAX_MESSAGE_BYTES)
    big = {"event_id": "e", "timestamp": 0, "trace_id": "t", "memory_id": "m", "scope": "project", "scope_id": "p",
           "project_id": "p", "kind": "turn", "speaker": "s", "content": "c" * limits.MIN_MAX_MESSAGE_BYTES,
           "task_id": None, "tokens": 0}
    with pytest.raises(RecordTooLargeError, match=r"MemoryEvent of \d+ bytes is over the 786432 bytes"):
        codec.encode("MemoryEvent", big)


def test_a_message_size_below_what_aios_events_need_is_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="AIOS_MAX_MESSAGE_BYTES: Input should be greater than or equal to 786432"):
        load_settings(max_message_bytes=100_000)
    s = load_settings(max_message_bytes=2_000_000)
    # The codec refuses above it; the producers and the topics take it with room for the framing.
    assert make_codec(s).max_message_bytes == 2_000_000
    assert producer_config(s)["message.max.bytes"] == 2_000_000 + limits.PRODUCER_HEADROOM_BYTES
    assert {spec.config["max.message.bytes"] for spec in topic_specs(s)} == {str(2_000_000 + limits.PRODUCER_HEADROOM_BYTES)}
