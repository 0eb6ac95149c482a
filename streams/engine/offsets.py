"""Which offset of a partition may be committed while many of its records are in flight.

Records of one partition finish in any order. The committed offset is the lowest one not yet
finished (Confluent's Parallel Consumer keeps the same rule), so a crash redelivers every record
that had not finished and skips none; records that finished above it are remembered here until
the ones below them finish too. Pure logic: the concurrent processor feeds it, a property test
checks it.
"""

from __future__ import annotations

from collections import deque


class OffsetWindow:
    """The offsets of one partition that were started, in order, and which of them finished."""

    def __init__(self) -> None:
        self._started: deque[int] = deque()  # ascending: a partition's records arrive in order
        self._finished: set[int] = set()
        self._commit: int | None = None  # the next offset to read after a restart
        self._committed: int | None = None  # the last position handed out by ``to_commit``

    def __len__(self) -> int:
        """Records started and not yet below the commit point (finished or not)."""
        return len(self._started)

    def start(self, offset: int) -> bool:
        """Track ``offset``; False when it is at or below one already seen (a record delivered again
        after a seek back, which is either in flight or finished already)."""
        last = self._started[-1] if self._started else (self._commit - 1 if self._commit is not None else None)
        if last is not None and offset <= last:
            return False
        self._started.append(offset)
        return True

    def finish(self, offset: int) -> None:
        """``offset``'s work is done and its outputs are durable."""
        if not self._started or offset < self._started[0]:
            return
        self._finished.add(offset)
        started = self._started
        while started and started[0] in self._finished:
            done = started.popleft()
            self._finished.discard(done)
            self._commit = done + 1

    @property
    def lowest_unfinished(self) -> int | None:
        return self._started[0] if self._started else None

    @property
    def finished_above(self) -> int:
        """Records finished but held back by an unfinished one below them."""
        return len(self._finished)

    def to_commit(self) -> int | None:
        """The position to commit (the lowest unfinished offset, or one past the last finished), or
        None when it has not moved since the last call."""
        position = self._started[0] if self._started else self._commit
        if position is None or position == self._committed:
            return None
        self._committed = position
        return position
