"""Provider selection from 'provider:model' specs and the keys that are set."""

from __future__ import annotations

import pytest

from aios.agents.errors import MissingCredentialsError
from aios.agents.llm.anthropic_provider import AnthropicProvider
from aios.agents.llm.base import ChatMessage, ChatRequest, LlmConfig
from aios.agents.llm.factory import LOCAL_API_KEY, PROVIDERS, describe_choice, make_provider
from aios.agents.llm.offline import OfflineProvider
from aios.agents.llm.openai_provider import OpenAIProvider
from aios.agents.llm.servers.anthropic import FakeAnthropic
from aios.agents.llm.servers.openai import FakeOpenAI
from aios.schemas.errors import ConfigError


async def test_no_spec_and_no_key_chooses_offline() -> None:
    provider = make_provider(LlmConfig())
    assert isinstance(provider, OfflineProvider)
    assert provider.offline is True


async def test_no_spec_with_key_chooses_openai_default_model() -> None:
    provider = make_provider(LlmConfig(openai_api_key="sk-test", openai_base_url="http://127.0.0.1:9/v1"))
    try:
        assert isinstance(provider, OpenAIProvider)
        assert provider.model == "gpt-4o-mini"
    finally:
        await provider.aclose()


async def test_explicit_spec_is_honoured() -> None:
    provider = make_provider(LlmConfig(spec=" OpenAI:gpt-4.1 ", openai_api_key="sk-test"))
    try:
        assert (provider.name, provider.model) == ("openai", "gpt-4.1")
    finally:
        await provider.aclose()
    assert make_provider(LlmConfig(spec="offline:echo", openai_api_key="sk-test")).offline is True


@pytest.mark.parametrize("key", [None, ""])
def test_explicit_openai_without_key_names_the_variable(key: str | None) -> None:
    with pytest.raises(MissingCredentialsError) as caught:
        make_provider(LlmConfig(spec="openai:gpt-4o-mini", openai_api_key=key))
    message = str(caught.value)
    assert "AIOS_OPENAI_API_KEY" in message and "OPENAI_API_KEY" in message
    assert "AIOS_LLM=offline:echo" in message
    assert isinstance(caught.value, ConfigError)
    assert caught.value.provider == "openai"


def test_unknown_provider_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        make_provider(LlmConfig(spec="llamafarm:big"))
    for name in PROVIDERS:
        assert name in str(caught.value)


@pytest.mark.parametrize("spec", ["openai", "openai:", ":gpt-4o", "", "   "])
def test_malformed_spec_says_the_format(spec: str) -> None:
    with pytest.raises(ConfigError, match="provider:model"):
        make_provider(LlmConfig(spec=spec))


def test_describe_choice() -> None:
    assert describe_choice(LlmConfig()) == (
        "LLM: offline provider (no AIOS_LLM and no OpenAI or Anthropic key set) — results are labelled offline"
    )
    assert describe_choice(LlmConfig(openai_api_key="sk-test")).startswith("LLM: openai:gpt-4o-mini")
    assert describe_choice(LlmConfig(spec="offline:echo")).endswith("results are labelled offline")


def test_config_repr_hides_the_keys() -> None:
    assert "sk-secret" not in repr(LlmConfig(openai_api_key="sk-secret", anthropic_api_key="sk-secret"))


def test_existing_callers_keep_working_without_the_new_fields() -> None:
    config = LlmConfig(spec="openai:gpt-4o-mini", openai_api_key="k", timeout_s=5.0)
    assert (config.anthropic_api_key, config.anthropic_base_url, config.local_base_url) == (None, None, None)


async def test_anthropic_spec_with_key(fake_anthropic: FakeAnthropic) -> None:
    config = LlmConfig(
        spec="anthropic:claude-sonnet-4-0",
        anthropic_api_key="sk-ant",
        anthropic_base_url=fake_anthropic.base_url,
    )
    provider = make_provider(config)
    try:
        assert isinstance(provider, AnthropicProvider)
        assert (provider.name, provider.model) == ("anthropic", "claude-sonnet-4-0")
        response = await provider.complete(ChatRequest(messages=(ChatMessage("user", "ping"),)))
        assert response.provider == "anthropic" and response.text
    finally:
        await provider.aclose()


@pytest.mark.parametrize("key", [None, ""])
def test_anthropic_without_key_names_the_variable(key: str | None) -> None:
    with pytest.raises(MissingCredentialsError) as caught:
        make_provider(LlmConfig(spec="anthropic:claude-haiku-4-5", anthropic_api_key=key, openai_api_key="k"))
    message = str(caught.value)
    assert "AIOS_ANTHROPIC_API_KEY (or ANTHROPIC_API_KEY)" in message
    assert "AIOS_LLM=offline:echo" in message
    assert caught.value.provider == "anthropic"


async def test_no_spec_with_only_an_anthropic_key_chooses_anthropic() -> None:
    config = LlmConfig(anthropic_api_key="sk-ant", anthropic_base_url="http://127.0.0.1:9")
    provider = make_provider(config)
    try:
        assert (provider.name, provider.model) == ("anthropic", "claude-haiku-4-5")
    finally:
        await provider.aclose()
    assert (
        describe_choice(config)
        == "LLM: anthropic:claude-haiku-4-5 (no AIOS_LLM set; an Anthropic key is set)"
    )
    both = LlmConfig(openai_api_key="sk", anthropic_api_key="sk-ant")
    assert describe_choice(both).startswith("LLM: openai:gpt-4o-mini")  # unchanged precedence


async def test_local_uses_the_openai_wire_format_at_the_base_url(fake_openai: FakeOpenAI) -> None:
    provider = make_provider(LlmConfig(spec="local:llama3.1:8b", local_base_url=fake_openai.base_url))
    try:
        assert isinstance(provider, OpenAIProvider)
        assert (provider.name, provider.model, provider.offline) == ("local", "llama3.1:8b", False)
        response = await provider.complete(ChatRequest(messages=(ChatMessage("user", "ping"),)))
        assert response.provider == "local"
    finally:
        await provider.aclose()
    (sent,) = fake_openai.requests
    assert sent.body["model"] == "llama3.1:8b"
    assert sent.headers["authorization"] == f"Bearer {LOCAL_API_KEY}"  # a dummy: no real key leaks


async def test_local_ignores_the_openai_key_and_url(fake_openai: FakeOpenAI) -> None:
    config = LlmConfig(
        spec="local:qwen2.5:7b",
        openai_api_key="sk-real",
        openai_base_url="http://127.0.0.1:9/v1",
        local_base_url=fake_openai.base_url,
    )
    provider = make_provider(config)
    try:
        await provider.complete(ChatRequest(messages=(ChatMessage("user", "ping"),)))
    finally:
        await provider.aclose()
    assert fake_openai.requests[0].headers["authorization"] != "Bearer sk-real"


def test_local_without_base_url_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="AIOS_LOCAL_LLM_BASE_URL") as caught:
        make_provider(LlmConfig(spec="local:llama3.1:8b", openai_api_key="sk-test"))
    assert not isinstance(caught.value, MissingCredentialsError)


def test_registry_names_every_backend() -> None:
    assert set(PROVIDERS) == {"openai", "anthropic", "local", "offline"}
