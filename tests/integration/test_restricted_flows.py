"""restricted flows everywhere its content flows, on the real broker and Redis, with the LLM and the
embeddings served by the wire-format OpenAI server as a *remote* provider: a restricted task's
memory, the summaries of it, the rolling context later tasks read, the outputs its dependents
get, and the embeddings never reach the remote server. And memory ids carry the project, so two
projects with the same task ids keep their own turns and their own Qdrant points."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from aios.agents.llm.servers.openai import FakeOpenAI
from aios.connectors.context.windows import lane
from aios.streams.engine.runtime import open_context
from aios.streams.kafka import EventProducer, TopicReader
from aios.streams.orchestration.plan import Plan, PlannedTask
from aios.streams.pipeline import running
from aios.streams.processors.agent_privacy import turn_memory_id
from aios.streams.readmodels.task_client import TaskClient
from aios.streams.settings import Settings
from aios.streams.topics import Topics
from tests.integration.helpers import wait_until
from tests.integration.test_memory import MODEL_DIR, delete_prefix, read_memory_topic

pytestmark = pytest.mark.integration

SECRET = "Whitfield payroll ledger 7731"


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def remote_only(settings: Settings, fake: FakeOpenAI, **more: Any) -> Settings:
    """Every model and embedder is the remote OpenAI provider, served by the fake."""
    return settings.replace(llm="openai:gpt-4o-mini", openai_api_key=SecretStr("sk-test"),
                            openai_base_url=fake.base_url, llm_max_retries=0, embedding_model_dir=MODEL_DIR, **more)


def seen_by(fake: FakeOpenAI, text: str) -> list[str]:
    """The paths of the requests the server received whose body holds ``text``."""
    return [r.path for r in fake.requests if text in json.dumps(r.body, ensure_ascii=False)]


class Agents:
    """Assignments straight to the role topic, and their attempts read back."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = Topics.from_settings(settings)
        self.producer = EventProducer(settings)
        self.reader = TopicReader(settings, self.topics.attempts, from_beginning=True)
        self.seen: dict[tuple[str, str], dict[str, Any]] = {}

    def send(self, description: str, project: str, *, task_id: str | None = None,
             privacy: str = "normal", context: dict[str, str] | None = None) -> str:
        task_id = task_id or uuid.uuid4().hex[:12]
        now = int(time.time() * 1000)
        self.producer.send(self.topics.role("general"), "Assignment", {
            "event_id": uuid.uuid4().hex, "timestamp": now, "trace_id": "t", "task_id": task_id,
            "project_id": project, "role": "general", "description": description, "submitted_at": now,
            "privacy": privacy, "context": context or {}}, key=task_id)
        self.producer.flush()
        return task_id

    async def attempt(self, project: str, task_id: str, timeout_s: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while (project, task_id) not in self.seen:
            assert time.monotonic() < deadline, f"no attempt for {project}/{task_id} within {timeout_s}s"
            for _, decoded in await asyncio.to_thread(lambda: list(self.reader.events(timeout_s=0.5))):
                if not isinstance(decoded, Exception):
                    self.seen[(decoded.value["project_id"], decoded.value["task_id"])] = decoded.value
        return self.seen[(project, task_id)]

    async def run(self, description: str, project: str, **kwargs: Any) -> dict[str, Any]:
        return await self.attempt(project, self.send(description, project, **kwargs))

    def close(self) -> None:
        self.reader.close()


async def test_restricted_memory_and_its_summaries_never_reach_a_remote_model(settings: Settings,
                                                                              fake: FakeOpenAI) -> None:
    # Small windows, so both lanes fold into summaries while the test runs.
    s = remote_only(settings, fake, context_window_tokens=120, context_summary_tokens=60)
    project = "tenant-a"
    agents, context = Agents(s), open_context(s)
    try:
        async with running(s, ["agents", "memory"]):
            for i in range(5):
                result = await agents.run(f"Reconcile line {i} of the {SECRET}, with its totals.", project,
                                          privacy="restricted")
                # Remote-only: the restricted task itself is refused before any request is made.
                assert result["status"] == "failed" and result["error_type"] == "NoDeploymentError"
            for i in range(8):
                result = await agents.run(f"Write release note {i} about the queue dashboard's new filters.",
                                          project)
                assert result["status"] == "succeeded"

            async def both_lanes_summarised() -> bool:
                normal = await context.read("project", project)
                restricted = await context.read(lane("project", True), project)
                return normal.summary is not None and restricted.summary is not None
            await wait_until(both_lanes_summarised)
            normal = await context.read("project", project)
            restricted = await context.read(lane("project", True), project)

        assert seen_by(fake, "release note"), "the normal tasks and their summaries went to the remote model"
        assert seen_by(fake, SECRET) == [], "restricted text reached the remote model"
        assert seen_by(fake, "Whitfield") == []
        # The rolling context later tasks read holds no restricted turn; the restricted lane has them.
        assert all(SECRET not in t["content"] for t in normal.turns)
        assert normal.summary is not None and SECRET not in normal.summary["content"]
        assert normal.summary["speaker"] == "memory:openai:gpt-4o-mini"
        assert restricted.summary is not None and restricted.summary["speaker"] == "memory"  # extractive, local
        assert SECRET in restricted.summary["content"] + "".join(t["content"] for t in restricted.turns)
        events = read_memory_topic(s)
        assert {e["privacy"] for e in events if SECRET in e["content"]} == {"restricted"}
        summaries = [e for e in events if e["kind"] == "summary"]
        assert {e["privacy"] for e in summaries if e["scope_id"] == project} == {"normal", "restricted"}
    finally:
        agents.close()
        await delete_prefix(context.redis, s.kafka.topic_prefix)
        await context.aclose()


async def test_the_outputs_of_a_restricted_task_make_its_dependents_restricted(settings: Settings,
                                                                               fake: FakeOpenAI) -> None:
    s = remote_only(settings, fake)
    topics = Topics.from_settings(s)
    plan = Plan(project="tenant-b", tasks=(
        PlannedTask(id="audit", role="general", description="Audit the payroll", privacy="restricted"),
        PlannedTask(id="newsletter", role="general", description="Write the newsletter from the audit",
                    depends_on=("audit",)),
    ))
    assignments = TopicReader(s, topics.role("general"), from_beginning=True)
    client = TaskClient(s)
    agents = Agents(s)

    async def assignment_of(task_id: str) -> dict[str, Any]:
        async def found() -> dict[str, Any] | None:
            for _, d in await asyncio.to_thread(lambda: list(assignments.events(timeout_s=0.5))):
                if not isinstance(d, Exception) and d.value["task_id"] == task_id:
                    return dict(d.value)
            return None
        result: dict[str, Any] = await wait_until(found, 60)
        return result

    try:
        async with running(s, ["orchestrator", "results"]):
            client.submit_plan(plan)
            audit = await assignment_of("audit")
            assert audit["privacy"] == "restricted"
            # The restricted task ran on a local model elsewhere; its attempt reports the output.
            now = int(time.time() * 1000)
            client.producer.send(topics.attempts, "TaskResult", {
                "event_id": uuid.uuid4().hex, "timestamp": now, "trace_id": "t", "task_id": "audit",
                "project_id": "tenant-b", "role": "general", "attempt": 1, "status": "succeeded",
                "output": f"{SECRET}: 41,200 in overtime", "error": None, "error_type": None, "agent_id": "local",
                "provider": "local", "model": "llama3.1:8b", "input_tokens": 1, "output_tokens": 1, "cost_usd": 0.0,
                "latency_ms": 1.0, "submitted_at": now, "recall": []}, key="tenant-b")
            client.producer.flush()
            newsletter = await assignment_of("newsletter")
            assert newsletter["privacy"] == "restricted" and SECRET in newsletter["context"]["audit"]
        async with running(s, ["agents"]):
            result = await agents.attempt("tenant-b", "newsletter")
        assert result["status"] == "failed" and result["error_type"] == "NoDeploymentError"
        assert "restricted" in result["error"]
        assert seen_by(fake, SECRET) == [] and seen_by(fake, "41,200") == []
    finally:
        assignments.close()
        client.close()
        agents.close()


async def test_restricted_memory_is_never_embedded_by_a_provider(settings: Settings, fake: FakeOpenAI) -> None:
    # The agents answer with the local offline model; the embeddings are the remote provider's.
    s = settings.replace(llm="offline:echo", vector_memory=True, embeddings="openai:text-embedding-3-small",
                         openai_api_key=SecretStr("sk-test"), openai_base_url=fake.base_url,
                         embedding_model_dir=MODEL_DIR)
    agents, context = Agents(s), open_context(s)
    project = "tenant-c"
    try:
        async with running(s, ["agents", "memory"]) as live:
            restricted = await agents.run(f"Total the {SECRET} for March.", project, privacy="restricted")
            normal = await agents.run("Describe the retry policy of the queue.", project)
            again = await agents.run(f"Compare the {SECRET} with February.", project, privacy="restricted")
            assert restricted["status"] == normal["status"] == again["status"] == "succeeded"
            vm = await live.runtime.vector_memory()

            async def indexed() -> bool:
                window = await context.read(lane("project", True), project)
                return len(window.turns) == 2 and await live.runtime.in_vector_thread(vm.count, project=project) >= 1
            await wait_until(indexed)
            await asyncio.sleep(1)  # any later index write of the batch lands too
            assert await live.runtime.in_vector_thread(vm.count, project=project) == 1  # the normal turn only
        assert seen_by(fake, "retry policy"), "the normal turn and its recall query were embedded remotely"
        assert seen_by(fake, SECRET) == [], "restricted text was sent to the embedding provider"
        assert all(path.endswith("/embeddings") for path in [r.path for r in fake.requests])
    finally:
        agents.close()
        await delete_prefix(context.redis, s.kafka.topic_prefix)
        await context.aclose()


async def test_restricted_memories_are_recalled_by_restricted_tasks_only(settings: Settings) -> None:
    s = settings.replace(llm="offline:echo", vector_memory=True, embedding_model_dir=MODEL_DIR)
    project = "tenant-d"
    now = int(time.time() * 1000)
    memories = [
        {"memory_id": "mem-restricted", "content": "The payroll overtime audit found 41,200 owed to night staff.",
         "privacy": "restricted"},
        {"memory_id": "mem-normal", "content": "The queue dashboard gained a filter by role.", "privacy": "normal"},
    ]
    producer = EventProducer(s)
    for m in memories:
        producer.send(Topics.from_settings(s).memory, "MemoryEvent", {
            "event_id": uuid.uuid4().hex, "timestamp": now, "trace_id": "t", "scope": "project", "scope_id": project,
            "project_id": project, "kind": "turn", "speaker": "x", "task_id": None, "tokens": 12, **m},
            key=project)
    producer.flush()
    agents = Agents(s)
    try:
        async with running(s, ["agents", "memory"]) as live:
            vm = await live.runtime.vector_memory()

            async def indexed() -> bool:
                return await live.runtime.in_vector_thread(vm.count, project=project) >= 2
            await wait_until(indexed)
            question = "How much overtime did the payroll audit find for night staff?"
            normal = await agents.run(question, project)
            restricted = await agents.run(question, project, privacy="restricted")
        assert "mem-restricted" not in normal["recall"]
        assert restricted["recall"][0] == "mem-restricted"
    finally:
        agents.close()


async def test_two_projects_with_the_same_task_ids_keep_their_own_memory(settings: Settings) -> None:
    s = settings.replace(llm="offline:echo", vector_memory=True, embedding_model_dir=MODEL_DIR)
    agents, context = Agents(s), open_context(s)
    try:
        async with running(s, ["agents", "memory"]) as live:
            for project in ("acme", "globex"):
                # Plan task ids repeat across projects: "t1" attempt 1 in both.
                result = await agents.attempt(project, agents.send(f"Plan the {project} launch", project,
                                                                   task_id="t1"))
                assert result["status"] == "succeeded"
            vm = await live.runtime.vector_memory()

            def count(**where: str) -> Any:
                return live.runtime.in_vector_thread(vm.count, **where)

            async def both_kept() -> bool:
                windows = [await context.read("project", p) for p in ("acme", "globex")]
                return all(len(w.turns) == 1 for w in windows) and await count() == 2
            await wait_until(both_kept)
            # A redelivered assignment changes nothing: same memory id, same point.
            agents.send("Plan the acme launch", "acme", task_id="t1")
            await asyncio.sleep(3)
            acme, globex = [await context.read("project", p) for p in ("acme", "globex")]
            assert [t["memory_id"] for t in acme.turns] == [turn_memory_id("acme", "t1", 1)]
            assert [t["memory_id"] for t in globex.turns] == [turn_memory_id("globex", "t1", 1)]
            assert "acme launch" in acme.turns[0]["content"] and "globex launch" in globex.turns[0]["content"]
            assert await count(project="acme") == await count(project="globex") == 1 and await count() == 2
    finally:
        agents.close()
        await delete_prefix(context.redis, s.kafka.topic_prefix)
        await context.aclose()
