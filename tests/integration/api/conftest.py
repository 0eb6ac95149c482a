"""The API tests drop their topics afterwards: every test creates a fresh prefix's topics, and a
shared broker that keeps tens of thousands of partitions runs out of heap and file handles."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aios.streams.topics import delete_topics


@pytest.fixture(autouse=True)
def _drop_test_topics(request: pytest.FixtureRequest) -> Iterator[None]:
    # Fetched before the test (a fixture is gone by this one's teardown); only tests that use it.
    settings = request.getfixturevalue("settings") if "settings" in request.fixturenames else None
    yield
    if settings is not None:
        delete_topics(settings)
