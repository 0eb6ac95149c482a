"""A TaskResult's artifact references in ClickHouse (results.artifacts, migration 9), through the
history sink's native path and its Python path alike; a result from before them reads as []."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from aios.bench.sink import task_events
from aios.connectors.history.chdb_store import ChdbStore
from aios.connectors.history.writer import Record, write_batch
from aios.schemas.artifacts import ArtifactRef
from aios.schemas.codec import Codec

pytestmark = pytest.mark.integration

REFS = [ArtifactRef("src/main.py", 120, "a" * 64, "s3://bucket/p/t/1/src/main.py").to_event(),
        ArtifactRef("output.md", 300_000, "b" * 64, "file:///data/artifacts/p/t/1/output.md").to_event()]


@pytest.fixture
def store(session_data_dir: Path) -> ChdbStore:
    return ChdbStore.open(session_data_dir / "chdb")  # the one chdb directory of this process


@pytest.mark.parametrize("native", [True, False])
def test_a_results_artifacts_are_stored_as_maps(store: ChdbStore, monkeypatch: pytest.MonkeyPatch,
                                                native: bool) -> None:
    codec = Codec(validate=False)
    project = f"a-{uuid.uuid4().hex[:8]}"
    results = [next(value for name, value in task_events(i) if name == "TaskResult") for i in range(2)]
    results[0].update(project_id=project, task_id="with", artifacts=REFS)
    results[1].update(project_id=project, task_id="without")
    results[1].pop("artifacts", None)  # as a producer from before artifacts wrote it: the default
    if not native:
        monkeypatch.setattr(store, "encoder", None)
    batch = write_batch(store, codec, [Record("w.results", 0, i, codec.encode("TaskResult", r))
                                       for i, r in enumerate(results)])
    assert (batch.stored, batch.native) == (2, 2 if native else 0)
    rows = store.query(f"SELECT task_id, artifacts FROM aios.results FINAL WHERE project_id = '{project}'")  # noqa: S608
    assert {r["task_id"]: r["artifacts"] for r in rows} == {"with": REFS, "without": []}
    sizes = store.query("SELECT arrayMap(a -> toUInt64(a['size']), artifacts) AS sizes FROM aios.results FINAL "  # noqa: S608
                        f"WHERE project_id = '{project}' AND task_id = 'with'")
    assert [int(s) for s in sizes[0]["sizes"]] == [120, 300_000]
