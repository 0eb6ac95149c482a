"""Shared resources of a running AIOS process, built once from settings and handed to processors."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from agents.llm.base import LlmConfig
from connectors.history import HistoryStore, open_store
from connectors.redis_context import RedisContext
from schemas.codec import Codec
from streams.kafka import make_codec
from streams.settings import Settings
from streams.topics import Topics

if TYPE_CHECKING:
    from agents.llm.base import Provider


def llm_config(settings: Settings) -> LlmConfig:
    """Settings are read at the edge; agents/ only sees this typed config."""
    def secret(value: SecretStr | None) -> str | None:
        return value.get_secret_value() if value is not None else None

    return LlmConfig(
        spec=settings.llm,
        openai_api_key=secret(settings.openai_api_key),
        openai_base_url=settings.openai_base_url,
        anthropic_api_key=secret(settings.anthropic_api_key),
        anthropic_base_url=settings.anthropic_base_url,
        local_base_url=settings.local_llm_base_url,
        timeout_s=settings.llm_timeout_s,
        max_retries=settings.llm_max_retries,
    )


@dataclass
class Runtime:
    """Clients are created lazily so each processor only opens what it uses."""

    settings: Settings
    topics: Topics = field(init=False)
    codec: Codec = field(init=False)
    agent_id: str = field(init=False)
    # Services that are not faust agents (the history sink); started by streams.app.running().
    services: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.topics = Topics.from_settings(self.settings)
        # Processors encode events they built from decoded, schema-checked inputs.
        self.codec = make_codec(self.settings, validate=False)
        self.agent_id = f"{socket.gethostname()}-{os.getpid()}"

    @cached_property
    def context(self) -> RedisContext:
        s = self.settings
        return RedisContext.from_url(
            s.redis_url, prefix=s.topic_prefix, window=s.context_window_turns, ttl_s=s.context_ttl_s
        )

    @cached_property
    def store(self) -> HistoryStore:
        return open_store(self.settings.clickhouse_url, self.settings.data_dir)

    @cached_property
    def provider(self) -> Provider:
        from agents.llm.factory import make_provider

        return make_provider(llm_config(self.settings))

    async def aclose(self) -> None:
        if "context" in self.__dict__:
            await self.context.aclose()
        if "provider" in self.__dict__:
            await self.provider.aclose()
