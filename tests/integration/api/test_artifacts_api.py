"""Artifacts through the API: listed and downloaded by callers who may read the project, a 404 for
anyone else and for any path outside it, and a task's whole output read through its reference."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from aios.schemas.artifacts import OUTPUT_ARTIFACT, artifact_key
from aios.schemas.events import envelope, now_ms
from aios.schemas.limits import excerpt
from aios.streams.artifacts import open_artifact_store
from aios.streams.kafka import EventProducer
from aios.streams.settings import Settings
from tests.integration.api.helpers import api_client, key_headers, poll

pytestmark = pytest.mark.integration

WHOLE = "# Report\n" + "every line of the long report\n" * 3_000


def result(task_id: str, project: str, output: str, artifacts: list[dict[str, str]]) -> dict[str, Any]:
    return {**envelope(), "task_id": task_id, "project_id": project, "role": "general", "attempt": 1,
            "status": "succeeded", "output": output, "error": None, "error_type": None, "agent_id": "a",
            "provider": "openai", "model": "gpt-4o-mini", "input_tokens": 1, "output_tokens": 1, "cost_usd": 0.0,
            "latency_ms": 1.0, "submitted_at": now_ms(), "recall": [], "artifacts": artifacts}


async def stored(settings: Settings) -> dict[str, Any]:
    """A finished task of project 'shop' with a file and an oversized output in the store, and a
    file of project 'other'."""
    store = open_artifact_store(settings)
    code = await store.save(artifact_key("shop", "build", 1, "src/app.py"), "src/app.py", b"print('hi')\n")
    page = await store.save(artifact_key("shop", "build", 1, "site/index.html"), "site/index.html",
                            b"<script>alert(1)</script>")
    whole = await store.save(artifact_key("shop", "build", 1, OUTPUT_ARTIFACT), OUTPUT_ARTIFACT, WHOLE.encode())
    await store.save(artifact_key("other", "x", 1, "secret.txt"), "secret.txt", b"not for shop")
    event = result("build", "shop", excerpt(WHOLE, 2_000, whole.uri),
                   [code.to_event(), page.to_event(), whole.to_event()])
    producer = EventProducer(settings)
    producer.send(f"{settings.kafka.topic_prefix}.results", "TaskResult", event, key="shop")
    producer.flush()
    return {"code": code, "page": page, "whole": whole}


async def test_a_projects_reader_lists_and_downloads_its_artifacts(settings: Settings) -> None:
    refs = await stored(settings)
    async with api_client(settings) as api:
        viewer = await key_headers(api, "viewer", ("shop",))
        listed = (await api.get("/v1/projects/shop/artifacts", headers=viewer)).json()
        assert [a["path"] for a in listed["artifacts"]] == ["build/1/output.md", "build/1/site/index.html",
                                                            "build/1/src/app.py"]
        r = await api.get("/v1/projects/shop/artifacts/build/1/src/app.py", headers=viewer)
        assert r.status_code == 200 and r.content == b"print('hi')\n"
        assert r.headers["x-checksum-sha256"] == refs["code"].sha256 == hashlib.sha256(r.content).hexdigest()
        assert r.headers["content-type"] == "text/plain; charset=utf-8"
        assert r.headers["content-disposition"] == "attachment; filename*=UTF-8''app.py"
        html = await api.get("/v1/projects/shop/artifacts/build/1/site/index.html", headers=viewer)
        assert html.headers["content-type"] == "text/plain; charset=utf-8"  # never served as a page to run
        one_task = (await api.get("/v1/projects/shop/artifacts?task=other-task", headers=viewer)).json()
        assert one_task["artifacts"] == []
        # The task's result references its files, and its whole output is read through the reference.
        task = await poll(lambda: api.get("/v1/tasks/build?project=shop", headers=viewer),
                          lambda r: r.status_code == 200 and r.json()["result"] is not None)
        assert {a["name"]: a["sha256"] for a in task.json()["result"]["artifacts"]} == {
            "src/app.py": refs["code"].sha256, "site/index.html": refs["page"].sha256,
            OUTPUT_ARTIFACT: refs["whole"].sha256}
        assert task.json()["result"]["artifacts"][2]["size"] == len(WHOLE.encode())
        output = await api.get("/v1/tasks/build/output?project=shop", headers=viewer)
        assert output.status_code == 200 and output.text == WHOLE


async def test_other_callers_and_paths_outside_the_project_get_nothing(settings: Settings) -> None:
    await stored(settings)
    async with api_client(settings) as api:
        other = await key_headers(api, "admin", ("other",))
        viewer = await key_headers(api, "viewer", ("shop",))
        assert (await api.get("/v1/projects/shop/artifacts")).status_code == 401
        assert (await api.get("/v1/projects/shop/artifacts", headers=other)).status_code == 404
        assert (await api.get("/v1/projects/shop/artifacts/build/1/src/app.py", headers=other)).status_code == 404
        for path in ("build/1/../../other/x/1/secret.txt", "../other/x/1/secret.txt", "build/1/%2E%2E/x",
                     "build/x/src/app.py", "build/1/", "build/1/src/missing.py", "..%2Fother/x/1/secret.txt"):
            r = await api.get(f"/v1/projects/shop/artifacts/{path}", headers=viewer)
            assert r.status_code == 404, (path, r.status_code, r.text)
            assert b"not for shop" not in r.content
        await poll(lambda: api.get("/v1/tasks/build?project=shop", headers=viewer),
                   lambda r: r.status_code == 200 and r.json()["result"] is not None)
        assert (await api.get("/v1/tasks/build/output?project=shop", headers=other)).status_code == 404


async def test_an_output_changed_in_the_store_is_refused_not_served(settings: Settings) -> None:
    refs = await stored(settings)
    store = open_artifact_store(settings)
    await store.write(artifact_key("shop", "build", 1, OUTPUT_ARTIFACT), WHOLE.replace("every", "EVERY").encode())
    async with api_client(settings) as api:
        viewer = await key_headers(api, "viewer", ("shop",))
        await poll(lambda: api.get("/v1/tasks/build?project=shop", headers=viewer),
                   lambda r: r.status_code == 200 and r.json()["result"] is not None)
        r = await api.get("/v1/tasks/build/output?project=shop", headers=viewer)
        assert r.status_code == 503 and refs["whole"].sha256 in r.json()["detail"]
