"""A transaction step whose error librdkafka marks retriable is repeated, not fatal: while a broker
is lost, the coordinator's time-outs once ended the results committer (tests/e2e/test_broker_loss.py)."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from aios.streams.engine import transactional
from aios.streams.engine.bounded import CallStuck
from aios.streams.engine.transactional import _until_done
from aios.streams.errors import KafkaError as StreamsKafkaError
from aios.streams.metrics import TXN_RETRIES


class Flaky:
    """Fails its first ``failures`` calls with ``error``."""

    def __init__(self, failures: int, error: KafkaError) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    def __call__(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise KafkaException(self.error)


def timed_out() -> KafkaError:
    return KafkaError(KafkaError._TIMED_OUT, "Failed to add offsets to transaction: Local: Timed out",
                      retriable=True)


def retries(step: str) -> float:
    return TXN_RETRIES.labels("test", step)._value.get()


def test_a_retriable_time_out_is_tried_again_until_it_completes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transactional.time, "sleep", lambda _s: None)
    before = retries("commit")
    call = Flaky(3, timed_out())
    _until_done("test", "commit", call)
    assert call.calls == 4
    assert retries("commit") - before == 3


@pytest.mark.parametrize("error", [
    KafkaError(KafkaError._FENCED, "fenced", fatal=True),
    KafkaError(KafkaError._TIMED_OUT, "abortable", retriable=True, txn_requires_abort=True),
    KafkaError(KafkaError.INVALID_TXN_STATE, "not retriable"),
], ids=["fatal", "needs-abort", "plain"])
def test_anything_but_a_plain_retriable_error_goes_to_the_caller_at_once(error: KafkaError) -> None:
    call = Flaky(1, error)
    with pytest.raises(KafkaException) as raised:
        _until_done("test", "send offsets", call)
    assert raised.value.args[0] is error and call.calls == 1


def test_a_time_out_that_outlasts_the_retry_window_goes_to_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(transactional.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(transactional.time, "sleep", lambda s: clock.__setitem__(0, clock[0] + s))
    call = Flaky(10_000, timed_out())
    with pytest.raises(KafkaException):
        _until_done("test", "abort", call)
    assert clock[0] <= transactional.TXN_RETRY_S
    assert 20 < call.calls < 100, "backed off to a few seconds a try, not a busy loop"


class Processor:
    """What ``_renew`` uses of a TransactionalProcessor; its new producers are names."""

    name, transactional_id = "test", "p-test-0"

    def __init__(self) -> None:
        self.producers: list[Any] = ["first", "alt"]
        self.producer: Any = "first"
        self.fenced_at: float | None = None

    def _new_producer(self, transactional_id: str) -> str:
        return f"new {transactional_id}"

    def _bounded(self, what: str, call: Any) -> Any:
        return call()  # inline: tests/unit/streams/test_bounded_calls.py runs the bounded caller


def renew(processor: Processor, producer: str, error: KafkaError) -> None:
    transactional.TransactionalProcessor._renew(processor, producer, KafkaException(error))  # type: ignore[arg-type]


def test_a_fatal_producer_is_replaced_with_its_own_transactional_id() -> None:
    processor = Processor()
    renew(processor, "alt", KafkaError(KafkaError.INVALID_TXN_STATE, "epoch bump refused", fatal=True))
    assert processor.producers == ["first", "new p-test-0-alt"] and processor.producer == "new p-test-0-alt"


def test_a_fence_is_answered_once_and_a_second_one_within_the_window_ends_the_process(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Once: the coordinator timed a transaction out while a broker was lost and bumped the epoch.
    # Again soon after: another instance runs with the same id; it keeps it.
    clock = [1000.0]
    monkeypatch.setattr(transactional.time, "monotonic", lambda: clock[0])
    processor, fenced = Processor(), KafkaError(KafkaError._FENCED, "fenced by a newer instance", fatal=True)
    renew(processor, "first", fenced)
    assert processor.producers[0] == "new p-test-0"
    clock[0] += transactional.FENCE_WINDOW_S - 1
    with pytest.raises(StreamsKafkaError, match="fenced or unusable twice"):
        renew(processor, "new p-test-0", fenced)
    clock[0] += transactional.FENCE_WINDOW_S + 1
    renew(processor, "new p-test-0", fenced)  # a window later it is a new event
    assert processor.fenced_at == clock[0]


def test_a_non_fatal_error_is_not_answered_with_a_new_producer() -> None:
    with pytest.raises(StreamsKafkaError, match="timed out, not fatal"):
        renew(Processor(), "first", KafkaError(KafkaError._TIMED_OUT, "timed out, not fatal", retriable=True))


def test_a_producer_in_an_erroneous_state_is_replaced_once_per_window(monkeypatch: pytest.MonkeyPatch) -> None:
    # After two aborts while the active controller was lost, produce() raised _STATE ("Erroneous
    # state") and the orchestrator died (tests/e2e/test_controller_loss.py in CI).
    clock = [1000.0]
    monkeypatch.setattr(transactional.time, "monotonic", lambda: clock[0])
    processor, stuck = Processor(), KafkaError(KafkaError._STATE, "Unable to produce message: Local: Erroneous state")
    renew(processor, "first", stuck)
    assert processor.producers == ["new p-test-0", "alt"] and processor.producer == "new p-test-0"
    with pytest.raises(StreamsKafkaError, match="unusable twice"):
        renew(processor, "new p-test-0", stuck)


class MovingCoordinator:
    """A consumer whose group coordinator moves: ``committed`` fails ``failures`` times with ``code``
    (as librdkafka reports it, not marked retriable), then answers."""

    def __init__(self, failures: int, code: int) -> None:
        self.failures, self.code, self.calls, self.seeks = failures, code, 0, []

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition("finals", 0), TopicPartition("finals", 1)]

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        self.calls += 1
        if self.calls <= self.failures:
            raise KafkaException(KafkaError(self.code, "Failed to get committed offsets: Broker: Not coordinator"))
        return [TopicPartition(tp.topic, tp.partition, 7 if tp.partition == 0 else -1001) for tp in partitions]

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))


class Rewinder:
    """What ``rewind`` uses of a TransactionalProcessor."""

    name = "test"

    def __init__(self, consumer: MovingCoordinator) -> None:
        self.consumer = consumer


@pytest.mark.parametrize("code", sorted(transactional.COORDINATOR_MOVING))
def test_rewinding_while_the_group_coordinator_moves_asks_again_instead_of_ending_the_process(
        monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    # CI run 17: a broker was killed, the transaction aborted on NOT_COORDINATOR, and reading the
    # committed offsets to rewind raised the same; the results committer exited.
    monkeypatch.setattr(transactional.time, "sleep", lambda _s: None)
    before = retries("read committed offsets")
    consumer = MovingCoordinator(3, code)
    transactional.TransactionalProcessor.rewind(Rewinder(consumer), {("finals", 1): 42})  # type: ignore[arg-type]
    assert consumer.calls == 4
    assert consumer.seeks == [("finals", 0, 7), ("finals", 1, 42)]
    assert retries("read committed offsets") - before == 3


def test_a_committed_offsets_error_that_is_no_coordinator_move_still_goes_to_the_caller(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transactional.time, "sleep", lambda _s: None)
    consumer = MovingCoordinator(1, KafkaError.GROUP_AUTHORIZATION_FAILED)
    with pytest.raises(KafkaException):
        transactional.TransactionalProcessor.rewind(Rewinder(consumer), {})  # type: ignore[arg-type]
    assert consumer.calls == 1 and consumer.seeks == []


def test_the_step_returns_what_the_call_returns() -> None:
    assert _until_done("test", "commit", lambda: 5) == 5


class HangingProducer:
    """A producer whose abort never completes: each call waits out its timeout (librdkafka then
    raises a retriable time-out); ``timeouts`` records what each call was given."""

    def __init__(self) -> None:
        self.timeouts: list[float | None] = []

    def abort_transaction(self, timeout: float | None = None) -> None:
        self.timeouts.append(timeout)
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "Transactional API operation timed out",
                                        retriable=True))


def _aborting(processor: Processor, producer: Any) -> None:
    processor._renew = (  # type: ignore[attr-defined]
        lambda p, e, stuck=False: transactional.TransactionalProcessor._renew(processor, p, e, stuck=stuck))  # type: ignore[arg-type]
    transactional.TransactionalProcessor._abort(processor, producer)  # type: ignore[arg-type]


def test_an_abort_that_never_completes_is_bounded_and_its_producer_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    # CI run 19: after the active controller was lost, the results committer's abort (no timeout:
    # librdkafka's default is forever) never returned, and the processor stalled with nothing logged.
    clock = [1000.0]
    monkeypatch.setattr(transactional.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(transactional.time, "sleep", lambda s: clock.__setitem__(0, clock[0] + s))
    hanging = HangingProducer()
    processor = Processor()
    processor.producers = [hanging, "alt"]
    processor.producer = hanging
    before = retries("new producer")
    _aborting(processor, hanging)
    assert hanging.timeouts and set(hanging.timeouts) == {transactional.TXN_CALL_S}, "every call is bounded"
    assert clock[0] - 1000.0 <= transactional.ABORT_RETRY_S
    assert processor.producers == ["new p-test-0", "alt"] and processor.producer == "new p-test-0"
    assert retries("new producer") - before == 1


def test_a_stuck_abort_is_answered_each_time_not_taken_for_a_second_instance(monkeypatch: pytest.MonkeyPatch) -> None:
    # Both producers of a processor can be caught in one outage; only a fence says another
    # instance owns the id, so two stuck aborts within the fence window do not end the process.
    monkeypatch.setattr(transactional.time, "sleep", lambda _s: None)
    monkeypatch.setattr(transactional, "ABORT_RETRY_S", 0.0)
    processor = Processor()
    first, second = HangingProducer(), HangingProducer()
    processor.producers = [first, second]
    _aborting(processor, first)
    _aborting(processor, second)
    assert processor.producers == ["new p-test-0", "new p-test-0-alt"]


def test_an_abort_that_never_returns_is_given_up_and_its_producer_replaced() -> None:
    processor = Processor()

    def never_returns(what: str, call: Any) -> None:
        raise CallStuck(f"{what} did not return within 45s")

    processor._bounded = never_returns  # type: ignore[method-assign]
    _aborting(processor, "first")
    assert processor.producers == ["new p-test-0", "alt"]

