"""schemathesis against the API's own OpenAPI document, on a live server over the real Kafka/Redis,
with every check on (``--checks all``) and data both valid and invalid for the schema: with a valid
admin key no request gets a 5xx or an answer outside its documented schema, every schema-valid
request is accepted and every schema-invalid one refused (the schema states the limits the API and
the processors share); without a credential every /v1 request gets 401 or 403. Examples per
operation stay few to keep CI short.

Two answers the schema cannot state are allowed, each for its one reason: 413 for a body over
AIOS_API_MAX_BODY_BYTES (a byte size, not a JSON Schema keyword), and 400 for a plan whose graph
is wrong (a dependency on a task not in the plan, a cycle, a repeated id).
"""

from __future__ import annotations

import asyncio
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import uvicorn
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.checks import CHECKS, CheckContext, load_all_checks, positive_data_acceptance
from schemathesis.config import SchemathesisConfig
from schemathesis.openapi import from_dict
from schemathesis.specs.openapi import schemas as _openapi_schemas  # noqa: F401

from aios.api.server import uvicorn_config
from aios.connectors.context.keys import KeyStore
from aios.streams.settings import Settings
from aios.streams.topics import create_topics, delete_topics

# schemathesis imports its OpenAPI modules lazily, and pytest rewrites a plugin's modules as they
# load. Done inside a test (after chdb, librdkafka and uvicorn are loaded), that rewrite hit CPython
# 3.11's "AST constructor recursion depth mismatch"; the import above does it at collection.
pytestmark = pytest.mark.integration
EXAMPLES = 8
# A plan's graph is checked after its schema: these problems are all a schema-valid plan can have
# (its milestones included: which exist, their order, their ids beside the tasks').
GRAPH_PROBLEMS = re.compile(r"depends on unknown task|depends on itself|duplicate id|dependency cycle"
                            r"|unknown milestone|of a later milestone|the id is milestone|for a goal, the planner")
CONFIG = SchemathesisConfig.from_dict({"checks": {"negative_data_rejection": {"expected-statuses": [
    "400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]}}})


def positive_data_acceptance_but_plan_graphs(ctx: CheckContext, response: Any, case: Case) -> bool | None:
    """schemathesis' check, but for a schema-valid plan refused for its graph alone."""
    if response.status_code == 400 and case.operation.label == "POST /v1/projects":
        problems = response.json()["detail"].removeprefix("invalid plan:").strip().splitlines()
        if problems and all(GRAPH_PROBLEMS.search(p) for p in problems):
            return None
    return positive_data_acceptance(ctx, response, case)


def every_check() -> list[Any]:
    load_all_checks()
    return [positive_data_acceptance_but_plan_graphs if c is positive_data_acceptance else c for c in CHECKS.get_all()]


@dataclass
class Live:
    url: str
    key: str
    openapi: dict[str, object]


@pytest.fixture(scope="module")
def live(base_settings: Settings) -> Iterator[Live]:
    s = base_settings.replace(topic_prefix=f"fz{uuid.uuid4().hex[:10]}", api_port=0, api_rate_per_s=10_000.0, api_rate_burst=10_000)
    create_topics(s)
    # The stdlib loop: uvloop's loop.close() blocked for ~30 s in this thread at teardown (native
    # handles; Python saw no busy thread), while `aios api` with uvloop on the main thread stops at once.
    server = uvicorn.Server(uvicorn_config(s, loop="asyncio"))
    thread = threading.Thread(target=server.run, daemon=True)  # uvicorn skips signal handlers off the main thread
    thread.start()
    while not server.started:
        assert thread.is_alive(), "the API failed to start"
        thread.join(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    key = asyncio.run(admin_key(s))
    try:
        yield Live(url, key, httpx.get(f"{url}/openapi.json").json())
    finally:
        server.should_exit = True
        thread.join(30)
        delete_topics(s)


async def admin_key(settings: Settings) -> str:
    client = aioredis.Redis.from_url(settings.stores.redis_url)
    try:
        key, _ = await KeyStore(client, settings.kafka.topic_prefix).create("admin", ["*"])
        return key
    finally:
        await client.aclose()


def operations(live: Live) -> list[object]:
    return [r.ok() for r in from_dict(live.openapi, config=CONFIG).get_all_operations()]


def test_the_openapi_document_is_complete(live: Live) -> None:
    paths = live.openapi["paths"]
    assert isinstance(paths, dict)
    for path, methods in paths.items():
        for method, op in methods.items():
            assert "200" in op["responses"] or "201" in op["responses"] or "202" in op["responses"], (method, path)
            ok = next(v for k, v in op["responses"].items() if k.startswith("2"))
            # JSON everywhere but downloads (artifacts, a whole output), which document their types.
            assert any(c.get("schema") for c in ok["content"].values()), f"{method} {path} has no response model"
            if path.startswith("/v1/"):
                assert op.get("security") == [{"HTTPBearer": []}], f"{method} {path} documents no auth"


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_fuzz_with_every_check_finds_the_schema_and_the_api_agree(live: Live, mode: GenerationMode) -> None:
    headers = {"Authorization": f"Bearer {live.key}"}
    checks = every_check()
    statuses: list[int] = []
    for op in operations(live):
        @given(case=op.as_strategy(generation_mode=mode))  # type: ignore[attr-defined]
        @hsettings(max_examples=EXAMPLES, deadline=None, database=None,
                   suppress_health_check=list(HealthCheck))
        def run(case: Case) -> None:
            response = case.call_and_validate(base_url=live.url, headers=headers, checks=checks, timeout=30)
            statuses.append(response.status_code)
        try:
            run()
        except Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE  # an operation with no input has no invalid input
    # The run did reach the routes: successes for valid data, never an auth failure (the key is
    # valid); refusals for invalid data, a mangled Authorization header among them.
    assert len(statuses) >= len(operations(live)) * 3
    if mode is GenerationMode.POSITIVE:
        assert {200, 202} <= set(statuses) and 401 not in statuses
    else:
        assert {400, 401, 422} <= set(statuses)


def test_fuzz_without_credentials_gets_only_401_or_403(live: Live) -> None:
    seen: set[int] = set()
    for op in operations(live):
        if not op.path.startswith("/v1/"):  # type: ignore[attr-defined]
            continue

        @given(case=op.as_strategy())  # type: ignore[attr-defined]
        @hsettings(max_examples=EXAMPLES, deadline=None, database=None,
                   suppress_health_check=list(HealthCheck))
        def run(case: Case) -> None:
            case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
            response = case.call(base_url=live.url, timeout=30)
            assert response.status_code in (401, 403), (case.method, case.formatted_path, response.status_code)
            seen.add(response.status_code)
        run()
    assert seen == {401}
