"""infra/connect/connectors/: every config parses and points at the JSON bridge topics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aios.streams.topics import Topics

CONFIGS = Path(__file__).resolve().parents[2] / "infra" / "connect" / "connectors"
TOPICS = Topics("aios", ("general",))


def properties(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: {line!r} is not key=value"
            out[key.strip()] = value.strip()
    return out


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.json")), ids=lambda p: p.name)
def test_rest_configs_are_complete(path: Path) -> None:
    body = json.loads(path.read_text())
    assert set(body) == {"name", "config"}, f"{path.name}: a Connect REST body is {{name, config}}"
    config = body["config"]
    assert config["connector.class"]
    assert all(isinstance(v, str) for v in config.values()), f"{path.name}: Connect config values are strings"
    topics = config.get("topics") or config.get("topic.prefix")
    assert topics, f"{path.name}: no topic"


def test_sources_feed_the_ingress_and_sinks_read_the_egress() -> None:
    jdbc = json.loads((CONFIGS / "jdbc-source-tasks.json").read_text())["config"]
    assert jdbc["topic.prefix"] == TOPICS.tasks_json  # with `query`, the prefix is the whole topic name
    clickhouse = json.loads((CONFIGS / "clickhouse-sink-results.json").read_text())["config"]
    assert clickhouse["topics"] == TOPICS.results_json
    assert clickhouse["topic2TableMap"] == f"{TOPICS.results_json}=results"
    assert properties(CONFIGS / "file-source-tasks.properties")["topic"] == TOPICS.tasks_json
    assert properties(CONFIGS / "file-sink-results.properties")["topics"] == TOPICS.results_json
