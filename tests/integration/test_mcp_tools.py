"""MCP tools against a real MCP server (the official SDK, tests/integration/mcp_server.py) over
Streamable HTTP and stdio: the calls, the errors the model reads, the definitions cached per server
version, and the journal that keeps a redelivered assignment (or a killed worker's successor) from
calling the server again."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pydantic import SecretStr

from aios.agents.llm.servers.openai import FakeOpenAI, ok, slow_first_token, tool_call
from aios.agents.mcp.client import McpConnection
from aios.agents.mcp.config import McpConfig, parse_mcp_section
from aios.agents.mcp.tools import McpToolset
from aios.agents.tools import ToolContext
from aios.cli import cli
from aios.connectors.context.tooldefs import ToolDefinitionsCache
from aios.streams.kafka import EventProducer
from aios.streams.pipeline import running
from aios.streams.settings import Settings
from tests.integration.local_servers import free_port
from tests.integration.mcp_server import call_ids, calls
from tests.integration.test_llm_journal import assignment, read

pytestmark = pytest.mark.integration
SERVER = Path(__file__).with_name("mcp_server.py")
AIOS = [sys.executable, "-c", "import sys; from aios.cli import main; sys.argv[0] = 'aios'; main()"]
TRANSPORTS = ["http", "stdio"]


class HttpMcpServer:
    """The test server on Streamable HTTP, in a process of its own (so it can be killed)."""

    def __init__(self, calls_file: Path, **env: str) -> None:
        self.port = free_port()
        self.calls_file = calls_file
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def start(self) -> HttpMcpServer:
        env = {**os.environ, "MCP_TEST_CALLS": str(self.calls_file), **self.env}
        self.proc = subprocess.Popen([sys.executable, str(SERVER), "http", str(self.port)], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "the MCP test server exited"
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.1)
        raise AssertionError("the MCP test server did not listen within 60s")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def calls_file(tmp_path: Path) -> Path:
    return tmp_path / "calls"


@pytest.fixture
def http_server(calls_file: Path) -> Iterator[HttpMcpServer]:
    server = HttpMcpServer(calls_file).start()
    yield server
    server.stop()


def server_entry(transport: str, calls_file: Path, url: str | None = None, **more: Any) -> dict[str, Any]:
    """A [[mcp.servers]] entry for the test server named ``counter``."""
    if transport == "http":
        assert url is not None
        return {"name": "counter", "transport": "http", "url": url, **more}
    return {"name": "counter", "transport": "stdio", "command": sys.executable, "args": [str(SERVER), "stdio"],
            "env": {"MCP_TEST_CALLS": str(calls_file), **more.pop("env", {})}, **more}


def toolset(entry: dict[str, Any], roles: dict[str, list[str]] | None = None,
            cache: ToolDefinitionsCache | None = None) -> tuple[McpConfig, McpToolset]:
    config = parse_mcp_section({"servers": [entry], "roles": roles or {"general": ["counter.*"]}}, "test.toml")
    connections = [McpConnection(c, connect_timeout_s=60, call_timeout_s=20) for c in config.servers]
    return config, McpToolset(config, connections, cache=cache)


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def entry_for(transport: str, calls_file: Path, **more: Any) -> tuple[dict[str, Any], HttpMcpServer | None]:
    if transport == "http":
        server = HttpMcpServer(calls_file).start()
        return server_entry("http", calls_file, server.url, **more), server
    return server_entry("stdio", calls_file, **more), None


async def test_tools_answer_and_fail_as_tool_errors_over_both_transports(transport: str, calls_file: Path) -> None:
    entry, http = entry_for(transport, calls_file, timeout_s=1, max_result_chars=100)
    _, tools = toolset(entry, {"general": ["counter.*"], "qa": ["counter.add"]})
    try:
        await tools.start()
        by_name = {t.spec.name: t for t in tools.tools_for("general")}
        assert sorted(by_name) == ["counter__add", "counter__big", "counter__fail", "counter__record", "counter__slow"]
        assert [t.spec.name for t in tools.tools_for("qa")] == ["counter__add"], "the allow-list is per role"
        assert tools.tools_for("backend") == []
        ctx = ToolContext()
        assert await by_name["counter__add"].run({"a": 2, "b": 3}, ctx) == "5"
        # The model reads every failure as the call's result, with what went wrong.
        assert await by_name["counter__fail"].run({"message": "no such file"}, ctx) == (
            "error: counter.fail failed: Error executing tool fail: no such file")
        assert await by_name["counter__slow"].run({"seconds": 5}, ctx) == (
            "error: counter.slow gave no answer within 1s")
        too_big = await by_name["counter__big"].run({"chars": 101}, ctx)
        assert too_big.startswith("error: counter.big returned 101 characters, over the 100")
        assert await by_name["counter__big"].run({"chars": 100}, ctx) == "x" * 100
        # Many tasks share one connection: their calls run at once and each gets its own answer.
        answers = await asyncio.gather(*(by_name["counter__add"].run({"a": i, "b": 1}, ctx) for i in range(20)))
        assert answers == [str(i + 1) for i in range(20)]
    finally:
        await tools.aclose()
        if http is not None:
            http.stop()
    assert sorted(calls(calls_file)) == sorted(["add", "fail", "slow", "big", "big", *["add"] * 20])


async def test_a_broken_connection_is_a_tool_error_then_reopened(calls_file: Path) -> None:
    server = HttpMcpServer(calls_file).start()
    _, tools = toolset(server_entry("http", calls_file, server.url))
    try:
        await tools.start()
        (add,) = [t for t in tools.tools_for("general") if t.tool == "add"]
        assert await add.run({"a": 1, "b": 1}, ToolContext()) == "2"
        server.stop()
        failed = await add.run({"a": 1, "b": 1}, ToolContext())
        assert failed.startswith(("error: the connection to MCP server 'counter'", "error: MCP server 'counter'")), failed
        server.start()
        assert await add.run({"a": 1, "b": 2}, ToolContext()) == "3", "the next call opens a new connection"
    finally:
        await tools.aclose()
        server.stop()


async def test_a_server_that_cannot_be_reached_at_start_offers_no_tools(calls_file: Path) -> None:
    config = parse_mcp_section({"servers": [
        {"name": "gone", "transport": "http", "url": f"http://127.0.0.1:{free_port()}/mcp"},
        server_entry("stdio", calls_file)], "roles": {"general": ["gone.*", "counter.add"]}}, "test.toml")
    tools = McpToolset(config, [McpConnection(c, connect_timeout_s=30, call_timeout_s=5) for c in config.servers])
    try:
        await tools.start()  # does not raise: the worker starts with the tools it can reach
        assert [t.spec.name for t in tools.tools_for("general")] == ["counter__add"]
    finally:
        await tools.aclose()


async def test_definitions_are_cached_per_server_version(settings: Settings, calls_file: Path) -> None:
    cache = ToolDefinitionsCache.from_url(settings.stores.redis_url, prefix=settings.kafka.topic_prefix, ttl_s=60)

    async def names(**env: str) -> list[str]:
        _, tools = toolset(server_entry("stdio", calls_file, env=env), cache=cache)
        try:
            await tools.start()
            return sorted(t.tool for t in tools.tools_for("general"))
        finally:
            await tools.aclose()

    try:
        first = await names()
        assert "extra" not in first
        # The server changed its tools without a new version: every worker keeps the version's tools.
        assert await names(MCP_TEST_EXTRA="1") == first
        # A new version is listed anew.
        assert await names(MCP_TEST_EXTRA="1", MCP_TEST_VERSION="2.0.0") == sorted([*first, "extra"])
    finally:
        await cache.aclose()


def config_file(tmp_path: Path, entry: dict[str, Any], roles: dict[str, list[str]]) -> Path:
    path = tmp_path / "aios.json"
    path.write_text(json.dumps({"mcp": {"servers": [entry], "roles": roles}}))
    return path


async def test_a_redelivered_assignment_never_calls_the_mcp_server_again(
        settings: Settings, http_server: HttpMcpServer, calls_file: Path, tmp_path: Path) -> None:
    path = config_file(tmp_path, server_entry("http", calls_file, http_server.url), {"general": ["counter.record"]})
    with FakeOpenAI() as llm:
        llm.script(tool_call("counter__record", note="ship it"), ok("Recorded the note."))
        s = settings.replace(llm="openai:gpt-4o-mini", openai_api_key=SecretStr("sk-test"),
                             openai_base_url=llm.base_url, llm_max_retries=0, llm_config=path)
        event = assignment(f"t-{uuid.uuid4().hex[:8]}", "general")
        producer = EventProducer(s)
        async with running(s, ["agents"]):
            for _ in range(2):  # the same assignment, delivered twice
                producer.send(s.kafka.topic_prefix + ".agent.general", "Assignment", event, key=event["task_id"])
                producer.flush()
            messages = await asyncio.to_thread(read, s, s.kafka.topic_prefix + ".messages", 2)
            attempts = [a for a in await asyncio.to_thread(read, s, s.kafka.topic_prefix + ".attempts", 4)
                        if a["status"] != "started"]
        assert len(llm.requests) == 2, "each step asked the LLM once"
        tools_offered = [t["function"]["name"] for t in llm.requests[0].body["tools"]]
    assert calls(calls_file) == ["record"], "the second delivery read the journal, not the server"
    # The call's id, the same on every replay, reaches the server as an idempotency key.
    assert call_ids(calls_file) == [f"{event['project_id']}/{event['task_id']}:1:0:0"]
    # The role's tools and its MCP tool, then the ones every writing role has (artifacts, questions).
    assert tools_offered == ["read_dependency_output", "search_memory", "counter__record", "write_artifact",
                             "ask_agent"]
    assert [a["status"] for a in attempts] == ["succeeded", "succeeded"]
    assert {m["event_id"] for m in messages} == {messages[0]["event_id"]}, "a replayed call is the same event"
    content = json.loads(messages[0]["content"])
    assert messages[0]["kind"] == "tool_call"
    assert content == {"tool": "counter__record", "arguments": {"note": "ship it"}, "result": "recorded: ship it",
                       "step": 0}


def worker_env(settings: Settings, llm: FakeOpenAI, path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIOS_", "OPENAI_"))}
    env.update({"AIOS_TOPIC_PREFIX": settings.kafka.topic_prefix, "AIOS_DATA_DIR": str(settings.stores.data_dir / "w"),
                "AIOS_KAFKA_BOOTSTRAP": settings.kafka.bootstrap, "AIOS_REDIS_URL": settings.stores.redis_url,
                "AIOS_METRICS_PORT": "0", "AIOS_LLM": "openai:gpt-4o-mini", "AIOS_OPENAI_API_KEY": "sk-test",
                "AIOS_OPENAI_BASE_URL": llm.base_url, "AIOS_LLM_MAX_RETRIES": "0", "AIOS_LLM_CONFIG": str(path),
                "AIOS_LLM_TIMEOUT_S": "120"})
    return env


async def until(probe: Any, what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not probe():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_a_killed_worker_s_successor_never_repeats_an_mcp_call(
        settings: Settings, transport: str, calls_file: Path, tmp_path: Path) -> None:
    entry, http = entry_for(transport, calls_file)
    path = config_file(tmp_path, entry, {"general": ["counter.record"]})
    event = assignment(f"t-{uuid.uuid4().hex[:8]}", "general")
    workers: list[subprocess.Popen[bytes]] = []
    try:
        with FakeOpenAI() as llm:
            # Step 0 asks for the tool; step 1 hangs until the worker is killed; the successor's
            # step 1 (its only LLM call: step 0 and the tool call are journaled) answers.
            llm.script(tool_call("counter__record", note="deploy v2"), slow_first_token(60, "never seen"),
                       ok("Deployed v2 once."))
            env = worker_env(settings, llm, path)
            worker = subprocess.Popen([*AIOS, "worker", "agents", "--role", "general"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            workers.append(worker)
            producer = EventProducer(settings)
            producer.send(settings.kafka.topic_prefix + ".agent.general", "Assignment", event, key=event["task_id"])
            producer.flush()
            await until(lambda: len(llm.requests) == 2, "the call after the tool call")
            before = calls(calls_file)
            worker.send_signal(signal.SIGKILL)  # mid-task: nothing acknowledged, the assignment is redelivered
            worker.wait(30)
            successor = subprocess.Popen([*AIOS, "worker", "agents", "--role", "general"], env=env,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            workers.append(successor)
            done = await asyncio.to_thread(_finished, settings, 180)
            requests = len(llm.requests)
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait(30)
        if http is not None:
            http.stop()
    after = calls(calls_file)
    print(f"MCP server calls ({transport}): before the kill {len(before)}, after the redelivery {len(after)}")
    assert before == ["record"] and after == ["record"], "the successor read the tool's result from the journal"
    assert call_ids(calls_file) == [f"{event['project_id']}/{event['task_id']}:1:0:0"]
    assert requests == 3, "the successor called the LLM only for the step that never answered"
    assert (done["task_id"], done["status"], done["output"]) == (event["task_id"], "succeeded", "Deployed v2 once.")


def _finished(settings: Settings, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = [a for a in read(settings, settings.kafka.topic_prefix + ".attempts", 10, timeout_s=2)
                if a["status"] != "started"]
        if done:
            return done[0]
    raise AssertionError("no attempt finished")


def test_aios_tools_lists_each_role_s_tools_and_an_unreachable_server(
        settings: Settings, calls_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "aios.json"
    path.write_text(json.dumps({"mcp": {"servers": [
        server_entry("stdio", calls_file), {"name": "gone", "transport": "http", "url": f"http://127.0.0.1:{free_port()}/mcp"}],
        "roles": {"general": ["counter.add", "gone.*"]}}}))
    env = {"AIOS_LLM_CONFIG": str(path), "AIOS_TOPIC_PREFIX": settings.kafka.topic_prefix,
           "AIOS_REDIS_URL": settings.stores.redis_url, "AIOS_MCP_CONNECT_TIMEOUT_S": "60"}
    result = CliRunner().invoke(cli, ["tools", "--role", "general", "--role", "qa", "--json"], env=env)
    assert result.exit_code == 0, result.output
    found = json.loads(result.output.strip().splitlines()[-1])
    assert [(t["name"], t["source"]) for t in found["roles"]["general"]] == [
        ("read_dependency_output", "builtin"), ("search_memory", "builtin"), ("counter__add", "mcp:counter")]
    assert [t["name"] for t in found["roles"]["qa"]] == ["read_dependency_output", "search_memory"]
    assert found["servers"]["counter"] == {"transport": "stdio", "server_name": "aios-test-counter", "version": "1.0.0",
                                           "tools": 5}
    assert found["servers"]["gone"]["tools"] == -1
    assert calls(calls_file) == [], "listing tools calls none"


def test_the_mcp_bench_runs_every_path(settings: Settings) -> None:
    env = {"AIOS_REDIS_URL": settings.stores.redis_url, "AIOS_TOPIC_PREFIX": settings.kafka.topic_prefix}
    result = CliRunner().invoke(cli, ["bench", "mcp", "--calls", "10", "--concurrency", "2", "--json"], env=env)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output.strip().splitlines()[-1])
    for path in ("in_process_tool", "journal_replay", "stdio", "http"):
        assert doc[path]["one_at_a_time"]["calls_per_s"] > 0 and doc[path]["concurrent"]["calls_per_s"] > 0
