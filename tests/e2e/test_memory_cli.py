"""``aios memory rebuild|show|search`` as a user runs them, against real Kafka, Redis and Qdrant
local mode with the real embedding model."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import redis

from aios.streams.kafka import EventProducer
from aios.streams.settings import load_settings
from tests.e2e.conftest import Cli
from tests.integration.test_vector_memory import DISTRACTORS, PARAPHRASE, RELEVANT

pytestmark = pytest.mark.integration

MODEL_DIR = Path(__file__).resolve().parents[2].parent / "shared/models/all-MiniLM-L6-v2-onnx"


def test_rebuild_then_show_and_search(cli: Cli) -> None:
    cli.env.update({"AIOS_VECTOR_MEMORY": "1", "AIOS_EMBEDDING_MODEL_DIR": str(MODEL_DIR),
                    "AIOS_CONTEXT_WINDOW_TURNS": "10",
                    "AIOS_CONTEXT_TRIM_TO": "1"})  # windows hold exactly the newest 10
    cli.run("topics", "create")
    prefix = cli.env["AIOS_TOPIC_PREFIX"]
    settings = load_settings(topic_prefix=prefix, kafka_bootstrap=cli.env["AIOS_KAFKA_BOOTSTRAP"])
    producer = EventProducer(settings)
    texts = [*DISTRACTORS[:20], RELEVANT]
    for n, text in enumerate(texts):
        producer.send(f"{prefix}.memory", "MemoryEvent", {
            "event_id": uuid.uuid4().hex, "timestamp": int(time.time() * 1000), "trace_id": "t",
            "memory_id": f"m-{n}", "scope": "project", "scope_id": "cli", "project_id": "cli", "kind": "turn",
            "speaker": "user", "content": text, "task_id": None, "tokens": len(text.split())}, key="cli")
    producer.flush()
    try:
        report = cli.json("memory", "rebuild")
        assert report["events"] == len(texts) and report["windows"] == 1
        assert report["vectors"] == len(texts) and report["keys_swapped"] > 0

        shown = cli.json("memory", "show", "project", "cli")
        assert [t["memory_id"] for t in shown["turns"]] == [f"m-{n}" for n in range(11, 21)]
        human = cli.run("memory", "show", "project", "cli").stdout
        assert "m-20" in human and "10 turns" in human

        found = cli.json("memory", "search", PARAPHRASE, "--project", "cli", "--top-k", "3")
        assert found["hits"][0]["id"] == "m-20" and found["hits"][0]["score"] > 0.35
        assert cli.json("memory", "search", PARAPHRASE, "--project", "nope")["hits"] == []
    finally:
        r = redis.Redis.from_url(cli.env["AIOS_REDIS_URL"])
        keys = list(r.scan_iter(match=f"{prefix}:*"))  # only this test's keys: Redis is shared
        if keys:
            r.delete(*keys)
