"""Fixtures shared by every test layer."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import settings

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


@pytest.fixture(scope="session")
def session_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """AIOS_DATA_DIR for tests in this process: chdb allows one data directory per process."""
    return tmp_path_factory.mktemp("aios-data")
