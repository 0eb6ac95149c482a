"""The commit point of a partition with records finishing in any order (hypothesis)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from aios.streams.engine.offsets import OffsetWindow


@given(st.lists(st.integers(0, 5), min_size=1, max_size=60), st.data())
def test_the_commit_never_passes_an_unfinished_record(gaps: list[int], data: st.DataObject) -> None:
    offsets, position = [], 0
    for gap in gaps:  # ascending offsets with holes (transaction markers, compacted records)
        position += gap + 1
        offsets.append(position)
    window = OffsetWindow()
    for offset in offsets:
        assert window.start(offset)
    order = data.draw(st.permutations(offsets))
    finished: set[int] = set()
    last = None
    for offset in order:
        window.finish(offset)
        finished.add(offset)
        commit = window.to_commit()
        if commit is not None:
            last = commit
        unfinished = [o for o in offsets if o not in finished]
        expected = min(unfinished) if unfinished else offsets[-1] + 1
        if last is not None:
            assert last <= expected, "a restart from the commit would skip an unfinished record"
            assert all(o in finished for o in offsets if o < last)
        assert window.finished_above == len([o for o in finished if unfinished and o > min(unfinished)])
    assert last == offsets[-1] + 1 and len(window) == 0


def test_a_record_seen_again_is_not_tracked_twice() -> None:
    window = OffsetWindow()
    assert window.start(5) and window.start(6)
    assert not window.start(5), "redelivered after a seek back while in flight"
    window.finish(5)
    window.finish(6)
    assert window.to_commit() == 7 and window.to_commit() is None
    assert not window.start(6), "already finished"
    assert window.start(7)
    assert window.lowest_unfinished == 7
