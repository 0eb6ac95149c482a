"""A transaction call that never returns is given up, not waited on forever.

librdkafka's send_offsets_to_transaction can block past its own timeout for good when the group
coordinator's broker went away (see streams/engine/bounded.py). These run that case with a producer
whose call blocks until the test ends, through the processor's real ``step``."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from typing import Any

import pytest
from confluent_kafka import TopicPartition

from aios.streams.engine import transactional
from aios.streams.engine.bounded import BoundedCaller, CallStuck
from aios.streams.metrics import TXN_RETRIES


def test_a_call_s_value_and_its_exception_come_back() -> None:
    caller = BoundedCaller("t")
    assert caller.call(lambda: 42, 5, "answer") == 42
    with pytest.raises(ZeroDivisionError):
        caller.call(lambda: 1 / 0, 5, "divide")
    assert caller.call(lambda: "again", 5, "answer") == "again"
    assert caller.abandoned == 0


def test_a_call_that_outlives_its_limit_is_given_up_and_the_next_runs_on_a_new_thread() -> None:
    caller, release = BoundedCaller("t"), threading.Event()
    before = threading.active_count()
    started = time.monotonic()
    with pytest.raises(CallStuck, match="send offsets did not return within 0s"):
        caller.call(release.wait, 0.2, "send offsets")
    assert 0.2 <= time.monotonic() - started < 5
    assert caller.call(lambda: "fresh", 5, "answer") == "fresh"
    assert caller.abandoned == 1 and threading.active_count() == before + 2
    release.set()  # the stuck call returns at last: its thread ends instead of idling
    deadline = time.monotonic() + 5
    while threading.active_count() > before + 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before + 1


def test_the_idle_thread_keeps_nothing_of_its_last_call_and_ends_when_closed() -> None:
    # A producer kept alive by the idle thread outlived the interpreter at exit: librdkafka's log
    # callback then ran into a finalized Python (SIGSEGV in 1 of 3 `aios demo` runs).
    class Handle:
        pass

    caller, handle = BoundedCaller("t"), Handle()
    kept = weakref.ref(handle)
    before = threading.active_count()
    expected = id(handle)
    assert caller.call(handle.__repr__, 5, "use the handle").endswith(f"{expected:x}>")
    del handle
    deadline = time.monotonic() + 5
    while kept() is not None and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.01)
    assert kept() is None, "the call's closure is still referenced"
    assert threading.active_count() == before + 1
    caller.close()
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before, "closed, its thread ended"


class Blocking:
    """A transactional producer whose send_offsets_to_transaction never returns (until ``release``)."""

    def __init__(self, release: threading.Event) -> None:
        self.release, self.calls = release, []

    def begin_transaction(self) -> None:
        self.calls.append("begin")

    def send_offsets_to_transaction(self, positions: Any, metadata: Any, timeout: float) -> None:
        self.calls.append(f"send offsets {timeout:g}")
        self.release.wait()

    def commit_transaction(self, timeout: float) -> None:
        self.calls.append("commit")


class Message:
    def __init__(self, offset: int) -> None:
        self._offset = offset

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return "finals"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset


class Consumer:
    def __init__(self) -> None:
        self.seeks: list[tuple[str, int, int]] = []

    def poll(self, timeout: float) -> Message:
        return Message(5)

    def consume(self, n: int, timeout: float) -> list[Message]:
        return [Message(6)]

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition("finals", 0)]

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition("finals", 0, 7)]

    def consumer_group_metadata(self) -> object:
        return object()

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [TopicPartition("finals", 0, 5)]

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))


class Copier(transactional.TransactionalProcessor):
    name = "copier"

    def process(self, batch: list[Any]) -> None:
        self.processed = [m.offset() for m in batch]


def copier(producer: Blocking, consumer: Consumer) -> Copier:
    processor = Copier.__new__(Copier)  # no faust service or runtime: only what step uses
    processor.consumer, processor.producers, processor.producer = consumer, [producer, "alt"], producer  # type: ignore[assignment,list-item]
    processor.transactional_id, processor.fenced_at = "p-copier-0", None
    processor.poison, processor.isolating, processor.current = {}, False, None
    processor.fence_by_group, processor.backoff, processor.batch_size = True, transactional.Backoff(), 10
    processor.caller = BoundedCaller("copier")
    processor._new_producer = lambda transactional_id: f"new {transactional_id}"  # type: ignore[method-assign,assignment,return-value]
    return processor


def test_a_send_offsets_that_never_returns_replaces_the_producer_and_reads_the_batch_again(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(transactional, "STUCK_AFTER_S", 0.3)
    release = threading.Event()
    stuck, consumer = Blocking(release), Consumer()
    processor = copier(stuck, consumer)
    before = TXN_RETRIES.labels("copier", "new producer")._value.get()
    try:
        started = time.monotonic()
        assert processor.step() == 0.0
        assert time.monotonic() - started < 10, "the step came back"
    finally:
        release.set()
    assert processor.processed == [5, 6]
    assert stuck.calls == ["begin", f"send offsets {transactional.TXN_CALL_S:g}"], "no commit after a stuck call"
    # A new producer of the same transactional id (its start aborts the stuck one's transaction) ...
    assert processor.producers == ["new p-copier-0", "alt"] and processor.producer == "new p-copier-0"
    assert TXN_RETRIES.labels("copier", "new producer")._value.get() - before == 1
    # ... and the batch is read again from the committed offset.
    assert consumer.seeks == [("finals", 0, 5)]
    assert "copier: send offsets did not return within 0s; the batch will be read again" in caplog.text
