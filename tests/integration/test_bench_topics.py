"""Benchmarks run on topics of their own and leave none behind, even when they fail."""

from __future__ import annotations

import pytest

from aios.bench.toolkit import scratch_topics
from aios.streams.settings import Settings
from aios.streams.topics import list_topics


def test_a_bench_deletes_its_topics_even_when_it_fails(settings: Settings) -> None:
    with pytest.raises(RuntimeError, match="mid-bench"), scratch_topics(settings, "itscratch") as s:
        assert f"{s.kafka.topic_prefix}.tasks" in {t.name for t in list_topics(s)}
        raise RuntimeError("mid-bench")
    assert not [t.name for t in list_topics(s) if t.name.startswith(s.kafka.topic_prefix)]
