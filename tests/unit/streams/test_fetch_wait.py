"""Every processor's consumer waits AIOS_KAFKA_FETCH_WAIT_MS at the broker when there is nothing new:
one setting, no base class overriding it (a 5–50 ms wait had idle pipelines poll the broker hundreds
of times a second; docs/benchmarks.md has the idle CPU it cost)."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from pydantic import ValidationError

from aios.schemas.errors import ConfigError
from aios.streams.engine import batch, concurrent, tail, transactional
from aios.streams.kafka import END_READER_FETCH_WAIT_MS, consumer_config
from aios.streams.settings import load_settings


def test_the_setting_reaches_the_consumer_config() -> None:
    assert consumer_config(load_settings(), "g")["fetch.wait.max.ms"] == 500
    assert consumer_config(load_settings(kafka_fetch_wait_ms=40), "g")["fetch.wait.max.ms"] == 40


def test_a_reader_that_waits_for_the_end_of_partitions_keeps_a_short_wait() -> None:
    # The end-of-partition event needs an empty fetch answer: the agent registry under 0.3 s
    # heartbeats never saw it for every partition with 500 ms (tests/integration/test_agent_registry.py).
    config = consumer_config(load_settings(), "g", **{"enable.partition.eof": True})
    assert config["fetch.wait.max.ms"] == END_READER_FETCH_WAIT_MS
    assert consumer_config(load_settings(), "g", **{"enable.partition.eof": True, "fetch.wait.max.ms": 77})[
        "fetch.wait.max.ms"] == 77, "an explicit wait still wins"


@pytest.mark.parametrize("module", [batch, concurrent, tail, transactional])
def test_no_processor_base_sets_its_own(module: Any) -> None:
    assert "fetch.wait.max.ms" not in inspect.getsource(module), f"{module.__name__} sets its own fetch wait"


@pytest.mark.parametrize("bad", [0, -5, 10_001])
def test_out_of_range_is_refused_with_the_setting_named(bad: int) -> None:
    with pytest.raises((ConfigError, ValidationError), match="fetch_wait_ms|FETCH_WAIT"):
        load_settings(kafka_fetch_wait_ms=bad)
