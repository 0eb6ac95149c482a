"""A batch whose outputs failed is read again record by record ("isolating") until a batch of records
commits: timed work committed alone in between does not end it. It once did while the rewound
records were still on their way, and the batch failed whole again, for good (test_poison.py)."""

from __future__ import annotations

from typing import Any

from tests.unit.streams.test_bounded_calls import Consumer, Message, copier


class Quick:
    """A transactional producer whose every call succeeds at once."""

    def begin_transaction(self) -> None: ...

    def send_offsets_to_transaction(self, positions: Any, metadata: Any, timeout: float) -> None: ...

    def commit_transaction(self, timeout: float) -> None: ...


class Arriving(Consumer):
    """Nothing to read at first (a fetch still in flight after the rewind), then the records."""

    def __init__(self) -> None:
        super().__init__()
        self.ready = False

    def poll(self, timeout: float) -> Message | None:  # type: ignore[override]
        return Message(5) if self.ready else None


def test_timed_work_committed_alone_does_not_end_the_isolating(monkeypatch: Any) -> None:
    consumer = Arriving()
    processor = copier(Quick(), consumer)  # type: ignore[arg-type]
    processor.producers = [processor.producer, Quick()]  # type: ignore[list-item]
    monkeypatch.setattr(type(processor), "has_timed_work", lambda self: True)
    processor.isolating = True
    assert processor.step() == 0.0 and processor.processed == []  # timed work, no records
    assert processor.isolating, "still isolating: the failed batch has not been read again yet"
    consumer.ready = True
    assert processor.step() == 0.0 and processor.processed == [5, 6]
    assert not processor.isolating


def test_records_read_again_end_it() -> None:
    consumer = Arriving()
    consumer.ready = True
    processor = copier(Quick(), consumer)  # type: ignore[arg-type]
    processor.producers = [processor.producer, Quick()]  # type: ignore[list-item]
    processor.isolating = True
    processor.step()
    assert not processor.isolating
