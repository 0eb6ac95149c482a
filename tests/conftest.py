"""Fixtures shared by every test layer."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from hypothesis import settings

# Generated cases test what code does with an input, not how fast: on a loaded 2-core CI machine
# running four test workers, hypothesis' default 200 ms deadline fails cases at random.
settings.register_profile("aios", deadline=None)
settings.load_profile("aios")

# CPython before 3.11.8 can fail ast.parse running in two threads at once ("SystemError: AST
# constructor recursion depth mismatch"). pytest's assertion rewriting parses a plugin's modules
# (anyio is one) when they are first imported, and anyio imports its parts lazily, from whichever
# thread first needs one: a test API server's thread serving its first static file crashed that
# way. Importing them all here, on the main thread, keeps those parses out of the threads.
for _name in dir(anyio):
    getattr(anyio, _name)


@pytest.fixture(scope="session")
def session_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """AIOS_DATA_DIR for tests in this process: chdb allows one data directory per process."""
    return tmp_path_factory.mktemp("aios-data")
