"""Fixtures shared by every test layer."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def session_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """AIOS_DATA_DIR for tests in this process: chdb allows one data directory per process."""
    return tmp_path_factory.mktemp("aios-data")
