"""write_artifact and oversized outputs in the agent's task logic, on a real filesystem store and the
wire-format OpenAI server: the result references what was written, an output over the inline limit
becomes an excerpt ending in its artifact's URI, and a restricted task (no store) fails as before."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from aios.agents.llm.openai_provider import OpenAIProvider
from aios.agents.llm.servers.openai import FakeOpenAI, ok, raw_tool_call
from aios.agents.runner import OUTPUT_TOO_LARGE, AgentTask, run_task
from aios.agents.tools import SaveArtifact
from aios.agents.tools_artifacts import artifact_tools
from aios.connectors.artifacts.local import LocalArtifactStore
from aios.schemas.artifacts import OUTPUT_ARTIFACT, ArtifactRef, artifact_key
from aios.schemas.limits import MAX_OUTPUT_BYTES, excerpt_ref, utf8_len

TASK = AgentTask(task_id="t-9", project_id="shop", role="general", description="Write the handler", attempt=2)


def saver(store: LocalArtifactStore, task: AgentTask = TASK) -> SaveArtifact:
    async def save(name: str, content: str) -> ArtifactRef:
        return await store.save(artifact_key(task.project_id, task.task_id, task.attempt, name), name,
                                content.encode())
    return save


async def test_a_written_artifact_is_stored_and_referenced_by_the_outcome(
        tmp_path: Path, fake_openai: FakeOpenAI, make_openai: Callable[..., OpenAIProvider]) -> None:
    store = LocalArtifactStore(tmp_path)
    code = "def handler():\n    return 200\n"
    fake_openai.script(raw_tool_call("write_artifact", json.dumps({"name": "src/handler.py", "content": code})), ok("Done: src/handler.py"))
    outcome = await run_task(make_openai(), TASK, tools=artifact_tools(), save=saver(store))
    assert outcome.ok and outcome.output == "Done: src/handler.py"
    (ref,) = outcome.artifacts
    assert (ref.name, ref.size, ref.sha256) == ("src/handler.py", len(code), hashlib.sha256(code.encode()).hexdigest())
    assert ref.uri == (tmp_path / "shop/t-9/2/src/handler.py").resolve().as_uri()
    assert (tmp_path / "shop/t-9/2/src/handler.py").read_text() == code
    assert outcome.tools[0].result.startswith("saved src/handler.py: 30 bytes, sha256 ")


async def test_a_bad_name_is_told_to_the_model_not_raised(
        tmp_path: Path, fake_openai: FakeOpenAI, make_openai: Callable[..., OpenAIProvider]) -> None:
    fake_openai.script(raw_tool_call("write_artifact", json.dumps({"name": "../../etc/passwd", "content": "x"})), ok("gave up"))
    outcome = await run_task(make_openai(), TASK, tools=artifact_tools(), save=saver(LocalArtifactStore(tmp_path)))
    assert outcome.ok and outcome.artifacts == ()
    assert outcome.tools[0].result.startswith("error: '../../etc/passwd': an artifact name is")
    assert list(tmp_path.iterdir()) == []


async def test_an_output_over_the_inline_limit_goes_to_the_store_and_the_event_carries_an_excerpt(
        tmp_path: Path, fake_openai: FakeOpenAI, make_openai: Callable[..., OpenAIProvider]) -> None:
    store = LocalArtifactStore(tmp_path)
    answer = "line of a long report é\n" * 2_000  # 50 KB
    fake_openai.script(ok(answer))
    outcome = await run_task(make_openai(), TASK, save=saver(store), inline_bytes=4096)
    assert outcome.ok, outcome.error
    (ref,) = outcome.artifacts
    assert ref.name == OUTPUT_ARTIFACT and ref.size == utf8_len(answer)
    assert utf8_len(outcome.output) <= 4096 and outcome.output.startswith("line of a long report")
    assert excerpt_ref(outcome.output) == ref.uri
    assert (await store.load(ref)).decode() == answer


async def test_without_a_store_an_oversized_output_still_fails_the_attempt(
        fake_openai: FakeOpenAI, make_openai: Callable[..., OpenAIProvider]) -> None:
    fake_openai.script(ok("x" * (MAX_OUTPUT_BYTES + 1)))
    outcome = await run_task(make_openai(timeout_s=120), TASK)  # a restricted task is given no store
    assert not outcome.ok and outcome.error_type == OUTPUT_TOO_LARGE and outcome.artifacts == ()


async def test_an_output_within_the_limit_stays_in_the_event(
        tmp_path: Path, fake_openai: FakeOpenAI, make_openai: Callable[..., OpenAIProvider]) -> None:
    fake_openai.script(ok("short answer"))
    outcome = await run_task(make_openai(), TASK, save=saver(LocalArtifactStore(tmp_path)), inline_bytes=4096)
    assert outcome.ok and outcome.output == "short answer" and outcome.artifacts == ()
