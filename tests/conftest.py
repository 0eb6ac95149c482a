"""Fixtures shared by every test layer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import settings

if TYPE_CHECKING:
    from tests.integration.s3_server import MotoS3

# Generated cases test what code does with an input, not how fast: on a loaded 2-core CI machine
# running four test workers, hypothesis' default 200 ms deadline fails cases at random.
settings.register_profile("aios", deadline=None)
settings.load_profile("aios")

# CPython before 3.11.8 can fail ast.parse running in two threads at once ("SystemError: AST
# constructor recursion depth mismatch"). pytest's assertion rewriting parses every module of a
# plugin package (anyio, hypothesis, schemathesis, ...) when it is first imported, and those
# packages import their parts lazily, from whichever thread first needs one (a test API server's
# thread, a hypothesis strategy built while a server thread imports): each such import was a
# random failure. Only the tests' own modules need rewritten asserts, and they are imported on the
# main thread at collection, so the plugins' modules are imported as they are.


def pytest_configure(config: pytest.Config) -> None:
    must_rewrite = getattr(config.pluginmanager.rewrite_hook, "_must_rewrite", None)
    if isinstance(must_rewrite, set):
        must_rewrite.clear()


# Longest first: the test workers take files in the order collected (`make test` passes xdist's
# --no-loadscope-reorder, which would otherwise put files with more tests first, and so these
# one-test files last), so the files that take minutes (clusters, broker loss, installs; `pytest
# --durations`) start early and the short unit tests fill in around them, instead of running alone
# at the end. Each worker starts with two files (with 4 workers, worker n takes the n-th and the
# (n+4)-th), so the two cluster tests, 1st and 5th, run one after the other, never side by side.
_SLOWEST = ("test_broker_loss.py", "test_install.py", "test_orchestrator.py", "test_cli.py",
            "test_controller_loss.py", "test_crash_safety.py", "test_aios_up.py", "test_kafka_security.py",
            "test_agents_cli.py", "test_sprints.py", "test_a2a.py", "test_outages.py", "test_agent_inflight.py",
            "test_traces.py", "test_broadcast_drain.py", "test_ask_agent_kill.py", "test_mcp_tools.py",
            "test_artifacts_cli.py")
_LAYER_ORDER = {"e2e": 0, "integration": 1, "unit": 2}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def order(item: pytest.Item) -> tuple[int, int]:
        parts = item.path.parts
        layer = parts[parts.index("tests") + 1] if "tests" in parts[:-1] else ""
        slow = _SLOWEST.index(item.path.name) if item.path.name in _SLOWEST else len(_SLOWEST)
        return slow, _LAYER_ORDER.get(layer, 2)

    items.sort(key=order)  # stable: otherwise in the usual order


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    """A real S3-compatible server (moto's, over HTTP) for a module of artifact tests."""
    from tests.integration.s3_server import MotoS3  # boto3 and moto only where a test asks for them

    try:
        server = MotoS3(tmp_path_factory.mktemp("moto")).__enter__()
    except RuntimeError as exc:
        pytest.fail(f"cannot start the test S3 server: {exc}")
    yield server
    server.__exit__(None, None, None)


@pytest.fixture(scope="session")
def session_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """AIOS_DATA_DIR for tests in this process: chdb allows one data directory per process."""
    return tmp_path_factory.mktemp("aios-data")
