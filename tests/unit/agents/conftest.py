"""Fixtures for the LLM layer: real fake-OpenAI and fake-Anthropic HTTP servers, providers on them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from aios.agents.llm.anthropic_provider import AnthropicProvider
from aios.agents.llm.base import LlmConfig
from aios.agents.llm.openai_provider import OpenAIProvider
from aios.agents.llm.servers.anthropic import FakeAnthropic
from aios.agents.llm.servers.openai import FakeOpenAI


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A started FakeOpenAI server, stopped after the test."""
    server = FakeOpenAI().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def make_openai(fake_openai: FakeOpenAI) -> AsyncIterator[Callable[..., OpenAIProvider]]:
    """Build OpenAIProviders against the fake server; every one is closed after the test."""
    made: list[OpenAIProvider] = []

    def make(model: str = "gpt-4o-mini", *, timeout_s: float = 10.0) -> OpenAIProvider:
        config = LlmConfig(
            spec=f"openai:{model}",
            openai_api_key="sk-test",
            openai_base_url=fake_openai.base_url,
            timeout_s=timeout_s,
        )
        provider = OpenAIProvider(model, config=config)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.aclose()


@pytest.fixture
def fake_anthropic() -> Iterator[FakeAnthropic]:
    """A started FakeAnthropic server, stopped after the test."""
    server = FakeAnthropic().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def make_anthropic(fake_anthropic: FakeAnthropic) -> AsyncIterator[Callable[..., AnthropicProvider]]:
    """Build AnthropicProviders against the fake server; every one is closed after the test."""
    made: list[AnthropicProvider] = []

    def make(
        model: str = "claude-haiku-4-5", *, timeout_s: float = 10.0
    ) -> AnthropicProvider:
        config = LlmConfig(
            spec=f"anthropic:{model}",
            anthropic_api_key="sk-ant-test",
            anthropic_base_url=fake_anthropic.base_url,
            timeout_s=timeout_s,
        )
        provider = AnthropicProvider(model, config=config)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.aclose()
