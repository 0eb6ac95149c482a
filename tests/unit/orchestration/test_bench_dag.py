"""The DAG bench's shapes and figures (pure; the 100,000-task run is `aios bench dag`)."""

from __future__ import annotations

from aios.bench.dag import bench_dag, shapes


def test_every_shape_has_the_asked_size_and_one_longest_or_widest_point() -> None:
    got = shapes(50)
    assert all(len(edges) == 50 for edges in got.values())
    assert list(got["chain, last task first"]) == list(reversed(got["chain"]))
    assert len(got["one task depending on the rest"]["sink"]) == 49


def test_every_walk_is_timed_with_the_baseline() -> None:
    doc = bench_dag(tasks=50, repeat=1)
    assert doc["tasks"] == 50 and len(doc["shapes"]) == 4
    for figures in doc["shapes"].values():
        assert set(figures) == {"one_pass_ms", "cycle_check_ms", "validate_ms", "critical_path_ms", "status_ms"}
        assert all(ms >= 0 for ms in figures.values())
