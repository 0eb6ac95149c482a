"""The runtime's LLM setup from settings: docs/agents.md's Ollama, vLLM and llama.cpp examples and
its config file, run as written against the wire-format servers serving only the model they name;
AIOS_LLM_CONFIG's mistakes; queue time in the LlmCall and in Prometheus."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from pydantic import SecretStr

from aios.agents.errors import UnknownModelError
from aios.agents.llm.base import ChatMessage, ChatRequest
from aios.agents.llm.catalogue import cost_usd
from aios.agents.llm.limits import Limits
from aios.agents.llm.router import Route
from aios.agents.llm.servers.anthropic import FakeAnthropic
from aios.agents.llm.servers.openai import CHAT_PATH, Behaviour, FakeOpenAI, status
from aios.agents.llm.servers.scripted import RecordedRequest
from aios.agents.runner import AgentTask, CallRecord, run_task
from aios.schemas.errors import ConfigError
from aios.schemas.events import envelope
from aios.streams.engine.runtime import Runtime
from aios.streams.metrics import ROUTER_QUEUE
from aios.streams.processors.agent_events import llm_call_event
from aios.streams.settings import load_settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "agents.md"
ENV = ("AIOS_LLM", "AIOS_LLM_DEPLOYMENTS", "AIOS_LLM_CONFIG", "AIOS_LOCAL_LLM_BASE_URL", "AIOS_LOCAL_CONTEXT_WINDOW",
       "AIOS_OPENAI_API_KEY", "OPENAI_API_KEY", "AIOS_OPENAI_BASE_URL", "OPENAI_BASE_URL", "AIOS_ANTHROPIC_API_KEY",
       "ANTHROPIC_API_KEY", "AIOS_ANTHROPIC_BASE_URL", "AIOS_API_PORT")


class ServingOnly(FakeOpenAI):
    """The OpenAI wire-format server as a local server runs it: one model name; others are 404."""

    def __init__(self, *models: str) -> None:
        super().__init__()
        self.models = models

    def _next(self, request: RecordedRequest) -> Behaviour:
        behaviour = super()._next(request)
        model = request.body.get("model")
        if model not in self.models:
            return status(404, error_code="model_not_found", message=f"model {model!r} not found, try pulling it")
        return behaviour


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def section(title: str) -> str:
    text = DOC.read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def bash_examples() -> dict[str, dict[str, str]]:
    """Each server's ```bash block in 'Any model you run': its exported variables."""
    out = {}
    for server, block in re.findall(r"\n(\S+) \([^\n]*?\n(?:[^\n]*\n)*?```bash\n(.*?)```", section("Any model you run"),
                                    re.S):
        exports = dict(re.findall(r"^export (\w+)=(\S+)", block, re.M))
        out[server] = exports
    return out


def at(url: str, server: FakeOpenAI | FakeAnthropic) -> str:
    """``url`` with the fake's host and port, keeping its path: the form the docs give is what is used."""
    ours = urlsplit(server.base_url)
    return urlsplit(url)._replace(netloc=ours.netloc).geturl()


def test_the_docs_give_the_three_servers_on_their_own_ports() -> None:
    examples = bash_examples()
    assert set(examples) == {"Ollama", "vLLM", "llama.cpp"}
    urls = {name: e["AIOS_LOCAL_LLM_BASE_URL"] for name, e in examples.items()}
    assert urls == {"Ollama": "http://localhost:11434/v1", "vLLM": "http://localhost:8000/v1",
                    "llama.cpp": "http://localhost:8080/v1"}


@pytest.mark.parametrize("server_name", ["Ollama", "vLLM", "llama.cpp"])
async def test_each_local_server_example_works_as_written(monkeypatch: pytest.MonkeyPatch, server_name: str) -> None:
    exports = bash_examples()[server_name]
    model = exports["AIOS_LLM"].removeprefix("local:")
    with ServingOnly(model) as server:
        for name, value in exports.items():
            monkeypatch.setenv(name, at(value, server) if name == "AIOS_LOCAL_LLM_BASE_URL" else value)
        assert urlsplit(server.base_url).path == urlsplit(exports["AIOS_LOCAL_LLM_BASE_URL"]).path == "/v1"
        rt = Runtime(load_settings(metrics_port=0))
        try:
            (d,) = rt.router.deployments
            assert (d.name, d.local, d.info.context_window) == (
                f"local:{model}", True, int(exports["AIOS_LOCAL_CONTEXT_WINDOW"]))
            outcome = await run_task(rt.router, AgentTask("t1", "p", "general", "Say hello"))
            assert outcome.ok, outcome.error
            assert outcome.cost_usd == 0.0
            (sent,) = server.requests
            assert (sent.path, sent.body["model"]) == (CHAT_PATH, model)
        finally:
            await rt.aclose()


async def test_the_config_file_example_works_as_written(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (toml,) = re.findall(r"```toml\n(.*?)```", section("The config file"), re.S)
    with ServingOnly("llama3.2:1b") as ollama, ServingOnly("gpt-5-mini") as openai, FakeAnthropic() as anthropic:
        path = tmp_path / "llm.toml"
        path.write_text(toml.replace("http://localhost:11434/v1", at("http://localhost:11434/v1", ollama)))
        monkeypatch.setenv("AIOS_LLM_CONFIG", str(path))
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("AIOS_OPENAI_BASE_URL", openai.base_url)
        monkeypatch.setenv("AIOS_ANTHROPIC_API_KEY", "sk-ant-test")
        monkeypatch.setenv("AIOS_ANTHROPIC_BASE_URL", anthropic.base_url)
        rt = Runtime(load_settings(metrics_port=0))
        try:
            by_name = {d.name: d for d in rt.router.deployments}
            assert list(by_name) == ["openai:gpt-5-mini", "anthropic:claude-haiku-4-5", "local:llama3.2:1b"]
            mini, haiku, local = by_name.values()
            assert mini.limits == Limits(max_concurrent=100, rpm=500, tpm=200_000)
            assert (haiku.limits, haiku.weight) == (Limits(max_concurrent=50, rpm=50), 2.0)
            assert (local.limits, local.info.context_window) == (Limits(max_concurrent=4), 4096)
            request = ChatRequest((ChatMessage("user", "ping"),), max_tokens=20)
            costs = {}
            for d in (mini, haiku, local):  # each answers on its own server
                response = await d.provider.complete(request)
                assert response.text
                costs[d.name] = cost_usd(d.info, response.usage)
            assert mini.info.input_per_mtok == 0.25 and costs["openai:gpt-5-mini"] > 0, "the file's price"
            assert costs["local:llama3.2:1b"] == 0.0 and costs["anthropic:claude-haiku-4-5"] > 0
            restricted = await rt.router.complete(Route(request, privacy="restricted"))
            assert restricted.deployment == "local:llama3.2:1b"
            assert (len(ollama.requests), len(openai.requests), len(anthropic.requests)) == (2, 1, 1)
        finally:
            await rt.aclose()


async def test_a_file_of_models_makes_a_newer_remote_model_known(tmp_path: Path) -> None:
    with FakeOpenAI() as server:
        flat = {"llm": "openai:gpt-5-mini", "openai_api_key": SecretStr("sk-test"), "openai_base_url": server.base_url,
                "metrics_port": 0}
        with pytest.raises(UnknownModelError, match="gpt-5-mini.*AIOS_LLM_CONFIG"):
            _ = Runtime(load_settings(**flat)).router  # unknown and unpriced: an error, never $0
        path = tmp_path / "models.json"
        path.write_text('{"models": [{"provider": "openai", "model": "gpt-5-mini", "context_window": 400000, '
                        '"input_per_mtok": 0.25, "output_per_mtok": 2.0, "tier": "small"}]}')
        rt = Runtime(load_settings(**flat, llm_config=path))
        try:
            outcome = await run_task(rt.router, AgentTask("t1", "p", "general", "Say hello"))
            assert outcome.ok and outcome.cost_usd > 0
        finally:
            await rt.aclose()


def test_a_config_file_mistake_is_a_config_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"AIOS_LLM_CONFIG: .*no such file: .*nowhere.toml"):
        load_settings(llm_config=tmp_path / "nowhere.toml")
    path = tmp_path / "llm.toml"
    path.write_text('[[deployments]]\nmodel = "local:m"\nrpm = 0\n')
    with pytest.raises(ConfigError, match=rf"{path} deployments\[0\] \(local:m\): 'rpm' must be a number > 0, not 0"):
        _ = Runtime(load_settings(llm_config=path, metrics_port=0)).router
    path.write_text('[[deployments]]\nmodel = "local:m"\n')
    both = load_settings(llm_config=path, llm_deployments="offline:echo", metrics_port=0)
    with pytest.raises(ConfigError, match="AIOS_LLM_DEPLOYMENTS and the deployments of AIOS_LLM_CONFIG .* keep one"):
        _ = Runtime(both).router
    with pytest.raises(ConfigError, match=r"deployments\[0\] \(local:m\): local:m needs an OpenAI-compatible server"):
        _ = Runtime(load_settings(llm_config=path, metrics_port=0)).router


async def test_the_queue_time_reaches_the_llm_call_the_journal_and_prometheus(tmp_path: Path) -> None:
    with ServingOnly("llama3.2:1b") as server:
        path = tmp_path / "llm.toml"
        path.write_text(f'[[deployments]]\nmodel = "local:llama3.2:1b"\nbase_url = "{server.base_url}"\n'
                        "max_concurrent = 1\n")
        rt = Runtime(load_settings(llm_config=path, llm_max_queue_s=30, metrics_port=0))
        try:
            before = ROUTER_QUEUE.labels("local:llama3.2:1b")._sum.get()  # type: ignore[attr-defined]
            import asyncio

            outcomes = await asyncio.gather(*(run_task(rt.router, AgentTask(f"t{i}", "p", "general", "Hi"))
                                              for i in range(4)))
            calls = [o.calls[0] for o in outcomes]
            assert all(o.ok for o in outcomes) and max(c.queue_ms for c in calls) > 0
            a = {**envelope(), "task_id": "t1", "project_id": "p", "attempt": 1}
            waited = max(calls, key=lambda c: c.queue_ms)
            out = next(o for o in outcomes if o.calls[0] is waited)
            assert llm_call_event(a, waited, out, "agent-1")["queue_ms"] == waited.queue_ms
            assert CallRecord.from_record(waited.to_record()).queue_ms == waited.queue_ms  # a replay says it too
            after = ROUTER_QUEUE.labels("local:llama3.2:1b")._sum.get()  # type: ignore[attr-defined]
            assert after - before == pytest.approx(sum(c.queue_ms for c in calls) / 1000, rel=0.01, abs=0.01)
        finally:
            await rt.aclose()


def test_the_llm_http_client_setting_reaches_the_providers_and_refuses_others(monkeypatch: pytest.MonkeyPatch) -> None:
    from aios.streams.engine.runtime import llm_config

    monkeypatch.setenv("AIOS_LLM_HTTP_CLIENT", "httpx")
    assert llm_config(load_settings()).http_client == "httpx"
    monkeypatch.setenv("AIOS_LLM_HTTP_CLIENT", "curl")
    with pytest.raises(ConfigError, match="AIOS_LLM_HTTP_CLIENT"):
        load_settings()
