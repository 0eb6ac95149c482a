"""Artifacts through the real pipeline (Kafka, the orchestrator, the agent worker, the results
committer), on the filesystem store and on a real S3-compatible server (moto's, over HTTP).

An answer over MAX_OUTPUT_BYTES once failed its attempt (output_too_large). Now the whole answer
goes to the artifact store; the result on Kafka carries an excerpt ending in the artifact's URI and
the reference (name, size, sha256, URI); a dependent task's read_dependency_output reads the whole
answer through it; and a file the model writes with write_artifact is listed in its result.
"""

from __future__ import annotations

import asyncio
import hashlib
import json

import pytest
from pydantic import SecretStr

from aios.agents.llm.servers.openai import FakeOpenAI, ok, raw_tool_call, tool_call
from aios.schemas.artifacts import OUTPUT_ARTIFACT
from aios.schemas.limits import MAX_OUTPUT_BYTES, excerpt_ref, utf8_len
from aios.streams.artifacts import open_artifact_store, result_artifacts, whole_output
from aios.streams.pipeline import running
from aios.streams.readmodels.task_client import wait_project
from aios.streams.settings import Settings
from tests.integration.s3_server import BUCKET, MotoS3
from tests.integration.test_poison import read, submit_plan

pytestmark = pytest.mark.integration

INLINE = 16 * 1024
# Over MAX_OUTPUT_BYTES; long lines stream in few chunks from the wire-format server.
BIG = "".join(f"{i:06d} " + "report-line-" * 40 + "\n" for i in range(600))


@pytest.fixture(params=["filesystem", "s3"])
def store_settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    if request.param == "filesystem":
        return settings
    moto: MotoS3 = request.getfixturevalue("moto")
    return settings.replace(artifacts_url=f"s3://{BUCKET}/{settings.kafka.topic_prefix}", artifacts_endpoint=moto.url,
                            artifacts_access_key_id=moto.credentials.access_key_id,
                            artifacts_secret_access_key=SecretStr(moto.credentials.secret_access_key))


async def test_an_oversized_answer_is_kept_as_an_artifact_and_read_whole_by_its_dependent(
        store_settings: Settings) -> None:
    assert utf8_len(BIG) > MAX_OUTPUT_BYTES
    code = "print('hello')\n"
    with FakeOpenAI() as server:
        server.script(
            raw_tool_call("write_artifact", json.dumps({"name": "src/hello.py", "content": code})), ok(BIG),
            tool_call("read_dependency_output", task_id="report"), ok("The report has 600 lines."))
        s = store_settings.replace(llm="openai:gpt-4o-mini", openai_api_key=SecretStr("sk-test"),
                                   openai_base_url=server.base_url, llm_max_retries=0, llm_timeout_s=120,
                                   output_inline_bytes=INLINE)
        async with running(s, ["orchestrator", "agents", "results"]) as live:
            await submit_plan(s, "art", [
                {"id": "report", "role": "general", "description": "Write the long report"},
                {"id": "summary", "role": "general", "description": "Summarise it", "depends_on": ["report"]}])
            status = await asyncio.to_thread(wait_project, s, "art", 120)
            live.check()
    assert status["state"] == "succeeded", status
    results = {r["task_id"]: r for r in read(s, "results") if r["project_id"] == "art"}
    report = results["report"]
    # The event carries an excerpt within the inline limit, ending in the whole answer's URI.
    assert utf8_len(report["output"]) <= INLINE and report["output"].startswith("000000 report-line-")
    refs = {ref.name: ref for ref in result_artifacts(report)}
    assert set(refs) == {"src/hello.py", OUTPUT_ARTIFACT}
    whole = refs[OUTPUT_ARTIFACT]
    assert excerpt_ref(report["output"]) == whole.uri
    assert (whole.size, whole.sha256) == (utf8_len(BIG), hashlib.sha256(BIG.encode()).hexdigest())
    assert refs["src/hello.py"].sha256 == hashlib.sha256(code.encode()).hexdigest()
    scheme = "s3" if s.stores.artifacts_url else "file"
    assert whole.uri.startswith(f"{scheme}://") and "/art/report/1/output.md" in whole.uri
    # The API and the CLI read it back whole, checked against its sha256.
    store = open_artifact_store(s)
    assert await whole_output(store, report) == BIG
    assert (await store.load(refs["src/hello.py"])).decode() == code
    # The dependent's tool read the whole answer through the reference, not the excerpt.
    [message] = [m for m in read(s, "messages") if m["task_id"] == "summary"]
    page = json.loads(message["content"])["result"]
    assert page.startswith(f"[characters 0-7800 of {len(BIG)};") and "000000 report-line-" in page
    assert results["summary"]["output"] == "The report has 600 lines." and results["summary"]["artifacts"] == []


async def test_a_restricted_task_keeps_nothing_in_the_store(settings: Settings) -> None:
    with FakeOpenAI() as server:
        server.script(ok(BIG))
        s = settings.replace(llm="local:test-model", local_llm_base_url=server.base_url, llm_max_retries=0,
                             llm_timeout_s=120, output_inline_bytes=INLINE)
        async with running(s, ["orchestrator", "agents", "results"]) as live:
            await submit_plan(s, "secret", [{"id": "r", "role": "general", "description": "Write the long report",
                                             "privacy": "restricted"}])
            status = await asyncio.to_thread(wait_project, s, "secret", 120)
            live.check()
    [result] = [r for r in read(s, "results") if r["project_id"] == "secret"]
    assert result["status"] == "failed" and result["error_type"] == "output_too_large" and result["artifacts"] == []
    assert status["state"] == "failed"
    assert await open_artifact_store(s).list_prefix("secret/", 10) == []
