"""One owner per embedded store: while `aios serve clickhouse|qdrant` holds a folder, every other
process reaches it through the server client at the address it serves, never opening it twice."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from aios.connectors.errors import StoreQueryError
from aios.connectors.history import open_store
from aios.connectors.history.factory import chdb_folder
from aios.connectors.local_owner import live_owner, owner_file
from aios.connectors.vector.base import MemoryItem
from aios.devstack.supervisor import free_port
from aios.streams.engine.runtime import open_vector_memory, qdrant_folder
from aios.streams.settings import Settings

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def serve(settings: Settings, store: str) -> subprocess.Popen[str]:
    env = {"AIOS_DATA_DIR": str(settings.stores.data_dir), "AIOS_CLICKHOUSE_HTTP_PORT": str(settings.stores.clickhouse_http_port),
           "AIOS_CLICKHOUSE_TCP_PORT": str(settings.stores.clickhouse_tcp_port),
           "AIOS_QDRANT_LOCAL_PORT": str(settings.stores.qdrant_local_port), "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([sys.executable, "-m", "aios.cli", "serve", store], env=env, cwd=ROOT,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert proc.stderr is not None
    lines = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        lines.append(line)
        if "aios: ready" in line or (not line and proc.poll() is not None):
            break
    assert "aios: ready" in lines[-1], "".join(lines)
    return proc


def stop(proc: subprocess.Popen[str]) -> int:
    proc.terminate()
    code = proc.wait(30)
    if proc.stderr is not None:
        proc.stderr.close()
    return code


@pytest.fixture
def own(settings: Settings, tmp_path: Path) -> Settings:
    return settings.replace(data_dir=tmp_path / "data", clickhouse_http_port=free_port(),
                            clickhouse_tcp_port=free_port(), qdrant_local_port=free_port())


@pytest.fixture
def clickhouse(own: Settings) -> Iterator[subprocess.Popen[str]]:
    proc = serve(own, "clickhouse")
    yield proc
    if proc.poll() is None:
        stop(proc)


def test_while_chdb_is_served_every_other_process_uses_its_address(own: Settings,
                                                                  clickhouse: subprocess.Popen[str]) -> None:
    owner = live_owner(chdb_folder(own.stores.data_dir))
    assert owner is not None and owner.pid == clickhouse.pid
    assert owner.url == f"http://127.0.0.1:{own.stores.clickhouse_http_port}"
    store = open_store(None, own.stores.data_dir)  # what `aios stats` and the API do
    assert store.engine == "clickhouse-server"
    assert store.query("SELECT name FROM system.databases WHERE name = 'aios'") == [{"name": "aios"}]  # migrated
    # A second owner for the same folder is refused, with the reason.
    second = subprocess.run([sys.executable, "-m", "aios.cli", "serve", "clickhouse"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, env={"AIOS_DATA_DIR": str(own.stores.data_dir), "PATH": "/usr/bin:/bin",
                                                        "AIOS_CLICKHOUSE_HTTP_PORT": str(free_port()),
                                                        "AIOS_CLICKHOUSE_TCP_PORT": str(free_port())})
    assert second.returncode == 1 and "already served by process" in second.stderr
    assert stop(clickhouse) == 0
    assert not owner_file(chdb_folder(own.stores.data_dir)).exists()  # the claim is withdrawn


def test_rows_written_through_the_owner_are_in_the_folder_afterwards(own: Settings,
                                                                    clickhouse: subprocess.Popen[str]) -> None:
    served = open_store(None, own.stores.data_dir)
    served.execute("CREATE TABLE aios.owner_check (n UInt8) ENGINE = MergeTree ORDER BY n")
    served.execute("INSERT INTO aios.owner_check VALUES (7)")
    stop(clickhouse)
    # Nobody serves the folder now: a process of its own opens it in-process (this test process
    # already holds another chdb directory, and chdb allows one per process).
    code = ("import sys; from pathlib import Path; from aios.connectors.history import open_store; "
            "s = open_store(None, Path(sys.argv[1])); print(s.engine, s.query('SELECT n FROM aios.owner_check'))")
    out = subprocess.run([sys.executable, "-c", code, str(own.stores.data_dir)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=True)
    assert out.stdout.strip() == "chdb [{'n': 7}]"


def test_a_dead_owner_is_not_an_owner(own: Settings, tmp_path: Path) -> None:
    folder = chdb_folder(own.stores.data_dir)
    folder.parent.mkdir(parents=True, exist_ok=True)
    owner_file(folder).write_text('{"pid": 999999, "url": "http://127.0.0.1:1"}')
    assert live_owner(folder) is None


def test_vector_memory_through_the_qdrant_owner(own: Settings) -> None:
    s = own.replace(vector_memory=True)
    proc = serve(s, "qdrant")
    try:
        with open_vector_memory(s, collection="owner-check") as memory:
            assert not memory.is_local and memory.where.endswith(str(s.stores.qdrant_local_port))
            items = [MemoryItem(memory_id=f"m{i}", text=text, project=project, scope="project", scope_id=project,
                                kind="turn", role="general", task_id=f"t{i}", ts=i)
                     for i, (text, project) in enumerate([("queues and streams", "p1"), ("a haiku about rain", "p1"),
                                                          ("queues in another tenant", "p2")])]
            assert memory.upsert(items) == 3
            hits = memory.search("queues", 2, project="p1")
            assert [h.id for h in hits][0] == "m0" and all(h.payload["project"] == "p1" for h in hits)
            assert memory.count(project="p2") == 1
            memory.delete(["m2"])
            assert memory.count() == 2
            # A rebuild's path: a new generation, copied, swapped in by alias.
            fresh = memory.generation("g2")
            fresh.create()
            assert fresh.copy_from(memory) == 2
            memory.swap_in(fresh)
            assert memory.count() == 2 and memory.target() == fresh.collection
            with pytest.raises(StoreQueryError):
                memory.with_collection("missing").search(np.zeros(memory.dimension, dtype=np.float32).tolist())
    finally:
        assert stop(proc) == 0
    assert not owner_file(qdrant_folder(s)).exists()
