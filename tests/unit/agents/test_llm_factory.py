"""Provider selection from 'provider:model' specs and the keys that are set."""

from __future__ import annotations

import pytest

from agents.errors import MissingCredentialsError
from agents.llm.base import LlmConfig
from agents.llm.factory import PROVIDERS, describe_choice, make_provider
from agents.llm.offline import OfflineProvider
from agents.llm.openai_provider import OpenAIProvider
from schemas.errors import ConfigError


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
        "LLM: offline provider (no AIOS_LLM and no OpenAI key set) — results are labelled offline"
    )
    assert describe_choice(LlmConfig(openai_api_key="sk-test")).startswith("LLM: openai:gpt-4o-mini")
    assert describe_choice(LlmConfig(spec="offline:echo")).endswith("results are labelled offline")


def test_config_repr_hides_the_key() -> None:
    assert "sk-secret" not in repr(LlmConfig(openai_api_key="sk-secret"))
