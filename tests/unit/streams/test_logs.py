"""Logs a person can use: one line per event with time, level, process, processor and ids; JSON
for machines; library chatter one level down; AIOS_LOG_LEVEL respected."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aios.devstack.logfile import matches, parse_line
from aios.streams.logs import configure, ids_scope, processor_scope, render_text
from aios.streams.settings import ObservabilitySettings


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def _configured(fmt: str, level: str) -> io.StringIO:
    out = io.StringIO()
    configure(ObservabilitySettings(log_format=fmt, log_level=level), "orchestrator", stream=out)
    return out


def test_json_lines_carry_time_level_process_processor_and_ids(restore_logging: None) -> None:
    out = _configured("json", "INFO")
    with processor_scope("agents:backend"), ids_scope(task_id="t1", project_id="p1", trace_id="tr"):
        logging.getLogger("aios.streams").info("attempt %d succeeded", 1)
    (line,) = out.getvalue().splitlines()
    doc = json.loads(line)
    assert doc["level"] == "INFO" and doc["process"] == "orchestrator" and doc["processor"] == "agents:backend"
    assert (doc["task_id"], doc["project_id"], doc["trace_id"]) == ("t1", "p1", "tr")
    assert doc["message"] == "attempt 1 succeeded" and doc["time"].endswith("Z") and doc["pid"] > 0


def test_text_is_one_line_per_event_even_with_a_traceback(restore_logging: None) -> None:
    out = _configured("text", "WARNING")
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        logging.getLogger("aios.x").exception("it failed\nbadly")
    (line,) = out.getvalue().splitlines()
    assert " ERROR " in line and "orchestrator[" in line and "ValueError" in line and "\\n" in line


def test_the_level_is_respected_and_library_warnings_go_one_level_down(restore_logging: None) -> None:
    out = _configured("json", "WARNING")
    logging.getLogger("aios.x").info("hidden at WARNING")
    logging.getLogger("librdkafka").warning("Coordinator load in progress: retrying")
    logging.getLogger("aiokafka.consumer.group_coordinator").warning("Heartbeat failed: rebalancing")
    logging.getLogger("aios.x").warning("shown")
    assert [json.loads(x)["message"] for x in out.getvalue().splitlines()] == ["shown"]
    out = _configured("json", "INFO")
    logging.getLogger("librdkafka").warning("Coordinator load in progress: retrying")
    (doc,) = [json.loads(x) for x in out.getvalue().splitlines()]
    assert doc["level"] == "INFO" and doc["logger"] == "librdkafka"


def test_scopes_belong_to_their_own_task(restore_logging: None) -> None:
    out = _configured("json", "INFO")
    log = logging.getLogger("aios.streams")

    async def one(task: str) -> None:
        with ids_scope(task_id=task):
            await asyncio.sleep(0.01)
            log.info("done")

    async def both() -> None:
        await asyncio.gather(one("a"), one("b"))

    asyncio.run(both())
    assert sorted(json.loads(x)["task_id"] for x in out.getvalue().splitlines()) == ["a", "b"]


def test_a_bad_level_or_format_names_the_variable() -> None:
    with pytest.raises(ValueError, match="log_level"):
        ObservabilitySettings(log_level="LOUD")
    assert ObservabilitySettings(log_level="info").log_level == "INFO"


def test_child_lines_become_documents_and_filters_match_process_or_processor() -> None:
    doc = parse_line("agents", json.dumps({"message": "m", "level": "INFO", "process": "x", "processor": "agents:qa",
                                           "task_id": "t"}) + "\n")
    assert doc["process"] == "agents"  # the supervisor's name for the child wins
    assert matches(doc, "agents", None) and matches(doc, "agents:qa", "t") and not matches(doc, "memory", None)
    plain = parse_line("api", "\x1b[1mTraceback (most recent call last):\x1b[0m\n")
    assert plain["level"] == "WARNING" and plain["message"] == "Traceback (most recent call last):"
    assert parse_line("api", "aios: ready\n")["level"] == "INFO"


@given(st.text())
def test_any_output_line_is_kept_as_one_rendered_line(line: str) -> None:
    doc = parse_line("p", line)
    assert "\n" not in render_text(doc)
