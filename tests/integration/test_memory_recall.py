"""Vector memory through the processors: the memory processor embeds and indexes turns with the
real MiniLM model into Qdrant local mode, and an agent recalls the related memory into its prompt
and its TaskResult, among more than fifty distractors on other topics."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from aios.connectors.vector.base import collection_name
from aios.streams.engine.runtime import open_vector_memory
from aios.streams.jobs.memory_rebuild import rebuild_memory
from aios.streams.kafka import EventProducer, TopicReader
from aios.streams.pipeline import running
from aios.streams.processors.agent_privacy import turn_memory_id
from aios.streams.settings import Settings
from aios.streams.topics import Topics
from tests.integration.test_vector_memory import DISTRACTORS, PARAPHRASE, RELEVANT

pytestmark = pytest.mark.integration

MODEL_DIR = Path(__file__).resolve().parents[2].parent / "shared/models/all-MiniLM-L6-v2-onnx"


def event(n: int, text: str, project: str) -> dict[str, object]:
    return {"event_id": uuid.uuid4().hex, "timestamp": int(time.time() * 1000), "trace_id": "t",
            "memory_id": f"mem-{n}", "scope": "project", "scope_id": project, "project_id": project,
            "kind": "turn", "speaker": "agent-x", "content": text, "task_id": f"task-{n}", "tokens": 10}


async def assign_and_wait(s: Settings, description: str, project: str) -> dict[str, Any]:
    task_id = uuid.uuid4().hex
    now = int(time.time() * 1000)
    producer = EventProducer(s)
    producer.send(f"{s.kafka.topic_prefix}.agent.general", "Assignment", {
        "event_id": uuid.uuid4().hex, "timestamp": now, "trace_id": "t", "task_id": task_id,
        "project_id": project, "role": "general", "description": description, "submitted_at": now,
    }, key=task_id)
    producer.flush()
    # The agent's attempt result (the orchestrator turns it into the terminal TaskResult).
    reader = TopicReader(s, Topics.from_settings(s).attempts, from_beginning=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for _, decoded in await asyncio.to_thread(lambda: list(reader.events(timeout_s=1))):
                if (not isinstance(decoded, Exception) and decoded.value["task_id"] == task_id
                        and decoded.value["status"] != "started"):  # its outcome, not its pickup
                    return dict(decoded.value)
        raise AssertionError("no TaskResult within 60s")
    finally:
        reader.close()


async def test_the_agent_recalls_the_related_memory_and_records_it(settings: Settings, tmp_path: Path) -> None:
    # Trimmed to the bound exactly (no chunked folds), so the summary count below is exact.
    s = settings.replace(vector_memory=True, embedding_model_dir=MODEL_DIR, context_trim_to=1.0)
    assert len(DISTRACTORS) >= 50
    producer = EventProducer(s)
    memories = [event(n, text, "proj-rec") for n, text in enumerate(DISTRACTORS, start=100)]
    memories.append(event(1, RELEVANT, "proj-rec"))
    memories.append(event(2, RELEVANT, "other-project"))  # filtered out by project
    for m in memories:
        producer.send(f"{s.kafka.topic_prefix}.memory", "MemoryEvent", m, key=str(m["scope_id"]))
    producer.flush()

    # The assignment goes straight to the role topic: this test is about the agent, not planning.
    async with running(s, ["agents", "memory"]) as live:
        vm = await live.runtime.vector_memory()
        deadline = time.monotonic() + 60
        while await live.runtime.in_vector_thread(vm.count) < len(memories):
            assert time.monotonic() < deadline, "memories were not indexed within 60s"
            await asyncio.sleep(0.2)
        result = await assign_and_wait(s, PARAPHRASE, project="proj-rec")
        assert result["status"] == "succeeded"
        assert result["recall"][0] == "mem-1", result["recall"]
        assert "mem-2" not in result["recall"] and len(result["recall"]) <= 3
        assert vm.collection == collection_name(s.kafka.topic_prefix)
        # 57 turns in a 50-turn window: 6 folded into a summary, then the agent's turn folds one
        # more into a second summary; both summaries are indexed too.
        while await live.runtime.in_vector_thread(vm.count) < len(memories) + 3:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        assert await live.runtime.in_vector_thread(vm.count, kind="summary") == 2
        # The agent's own turn is indexed too (it restates the task, so it now ranks first), with its role.
        hits = await live.runtime.in_vector_thread(vm.search, PARAPHRASE, 3, project="proj-rec", kind="turn")
        assert [h.id for h in hits[:2]] == [turn_memory_id("proj-rec", result["task_id"], 1), "mem-1"]
        assert hits[0].payload["role"] == "general" and hits[1].score >= 0.35

    # A rebuild recreates the same collection contents from the log.
    report = await rebuild_memory(s)
    assert report.vectors == report.events == len(memories) + 3
    vm = open_vector_memory(s)
    try:
        assert vm.count() == len(memories) + 3 and vm.count(kind="summary") == 2
        ranked = [h.id for h in vm.search(PARAPHRASE, 3, project="proj-rec", kind="turn")]
        assert ranked[:2] == [turn_memory_id("proj-rec", result["task_id"], 1), "mem-1"]
        assert vm.count(kind="turn", project="proj-rec") == len(DISTRACTORS) + 2
    finally:
        vm.close()
