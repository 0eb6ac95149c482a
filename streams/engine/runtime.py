"""Shared resources of a running AIOS process, built once from settings and handed to processors."""

from __future__ import annotations

import asyncio
import functools
import os
import socket
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import SecretStr

from aios.agents.llm.base import LlmConfig
from aios.connectors.context.tokens import TokenCounter
from aios.connectors.context.windows import SCOPES, RedisContext, ScopePolicy
from aios.connectors.history import HistoryStore, open_store
from aios.connectors.local_owner import live_owner
from aios.schemas.codec import Codec
from aios.schemas.errors import ConfigError
from aios.streams.kafka import make_codec
from aios.streams.sealing import Sealer
from aios.streams.settings import Settings
from aios.streams.topics import Topics

T = TypeVar("T")

if TYPE_CHECKING:
    from aios.agents.llm.catalogue import Catalogue
    from aios.agents.llm.configfile import LlmFile
    from aios.agents.llm.router import Router
    from aios.connectors.artifacts import ArtifactStore
    from aios.connectors.context.journal import LlmJournal
    from aios.connectors.context.ratelimit import SharedRates
    from aios.connectors.vector.base import Embedder
    from aios.connectors.vector.qdrant import VectorMemory


def llm_config(settings: Settings) -> LlmConfig:
    """Settings are read at the edge; agents/ only sees this typed config."""
    def secret(value: SecretStr | None) -> str | None:
        return value.get_secret_value() if value is not None else None

    return LlmConfig(
        spec=settings.llm.spec,
        openai_api_key=secret(settings.llm.openai_api_key),
        openai_base_url=settings.llm.openai_base_url,
        anthropic_api_key=secret(settings.llm.anthropic_api_key),
        anthropic_base_url=settings.llm.anthropic_base_url,
        local_base_url=settings.llm.local_base_url,
        timeout_s=settings.llm.timeout_s,
        http_client=settings.llm.http_client,
    )


def open_context(settings: Settings, prefix: str | None = None) -> RedisContext:
    """Rolling-context windows with each scope's retention policy from settings."""
    s = settings
    default = ScopePolicy(turns=s.memory.context_window_turns, tokens=s.memory.context_window_tokens, ttl_s=s.memory.context_ttl_s,
                          trim_to=s.memory.context_trim_to)
    policies = {scope: ScopePolicy(s.memory.turns_for(scope), s.memory.tokens_for(scope), s.memory.ttl_for(scope), s.memory.context_trim_to)
                for scope in SCOPES}
    return RedisContext.from_url(s.stores.redis_url, prefix=prefix or s.kafka.topic_prefix, default=default, policies=policies)


def open_embedder(settings: Settings) -> Embedder:
    """The local ONNX model, or provider embeddings with AIOS_EMBEDDINGS=openai:<model>."""
    from aios.connectors.vector.onnx import OnnxEmbedder
    from aios.connectors.vector.openai import OpenAIEmbedder

    if settings.memory.embeddings == "local":
        return OnnxEmbedder(settings.memory.embedding_model_dir)
    model = settings.memory.embeddings.partition(":")[2].strip()
    if settings.llm.openai_api_key is None:
        raise ConfigError(f"AIOS_EMBEDDINGS={settings.memory.embeddings} needs AIOS_OPENAI_API_KEY (or OPENAI_API_KEY); "
                          "or set AIOS_EMBEDDINGS=local for the local model")
    return OpenAIEmbedder(model, api_key=settings.llm.openai_api_key.get_secret_value(),
                          base_url=settings.llm.openai_base_url, dimension=settings.memory.embedding_dimension,
                          timeout_s=settings.llm.timeout_s, max_retries=settings.llm.max_retries)


def qdrant_folder(settings: Settings) -> Path:
    return settings.stores.data_dir / "qdrant"


def open_vector_memory(settings: Settings, collection: str | None = None) -> VectorMemory:
    """Qdrant server when AIOS_QDRANT_URL is set; else, when `aios up` owns the local folder, the
    address it serves it on; else local mode under data_dir/qdrant in this process."""
    from aios.connectors.vector.qdrant import VectorMemory

    embedder = open_embedder(settings)
    kwargs: dict[str, Any] = {"embedder": embedder, "prefix": settings.kafka.topic_prefix, "collection": collection}
    owner = None if settings.stores.qdrant_url else live_owner(qdrant_folder(settings))
    if settings.stores.qdrant_url:
        memory = VectorMemory.server(settings.stores.qdrant_url, **kwargs)
    elif owner is not None:
        memory = VectorMemory.server(owner.url, **kwargs)
    else:
        memory = VectorMemory.local(qdrant_folder(settings), **kwargs)
    memory.ensure_collection()
    return memory


@dataclass
class Runtime:
    """Clients are created lazily so each processor only opens what it uses."""

    settings: Settings
    topics: Topics = field(init=False)
    codec: Codec = field(init=False)
    agent_id: str = field(init=False)
    # Services that are not faust agents (the history sink); started by streams.app.running().
    services: list[Any] = field(default_factory=list)
    # Run in order on a clean shutdown, before the app stops (the agents' drain).
    drainers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Run when the processors crash or fail to start, before the app stops (agents say `failed`).
    on_failure: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Set by a processor that asks its process to stop cleanly, as SIGTERM does (a drain broadcast).
    stop_requested: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.topics = Topics.from_settings(self.settings)
        # Processors encode events they built from decoded, schema-checked inputs.
        self.codec = make_codec(self.settings, validate=False)
        self.agent_id = f"{socket.gethostname()}-{os.getpid()}"

    @cached_property
    def context(self) -> RedisContext:
        return open_context(self.settings)

    @cached_property
    def sealer(self) -> Sealer:
        """Seals and opens restricted content with AIOS_ENCRYPTION_KEY (a no-op without it)."""
        return Sealer.from_settings(self.settings)

    @cached_property
    def tokens(self) -> TokenCounter:
        return TokenCounter.from_model_dir(self.settings.memory.embedding_model_dir)

    @cached_property
    def vector(self) -> VectorMemory:
        """Vector memory with the local embedder (only when AIOS_VECTOR_MEMORY is on)."""
        return open_vector_memory(self.settings)

    @cached_property
    def vector_executor(self) -> ThreadPoolExecutor:
        # One thread owns the Qdrant client: local mode is not safe to call from several at once.
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="aios-qdrant")

    async def vector_memory(self) -> VectorMemory:
        """:attr:`vector`, opened (model load, collection check) in its own thread."""
        return await self.in_vector_thread(lambda: self.vector)

    async def in_vector_thread(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a VectorMemory call (embedding included) off the event loop, one at a time."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.vector_executor, functools.partial(call, *args, **kwargs))

    @cached_property
    def store(self) -> HistoryStore:
        s = self.settings
        return open_store(s.stores.clickhouse_url, s.stores.data_dir, ttl_days=s.stores.history_ttl_days)

    @cached_property
    def llm_file(self) -> LlmFile | None:
        """The file AIOS_LLM_CONFIG names, read and checked (None when it is unset)."""
        from aios.agents.llm.configfile import read_llm_file

        path = self.settings.llm.config_file
        return read_llm_file(path) if path is not None else None

    @cached_property
    def catalogue(self) -> Catalogue:
        """The packaged model catalogue, with the models of AIOS_LLM_CONFIG and the local window."""
        from aios.agents.llm.catalogue import load_catalogue

        file = self.llm_file
        return load_catalogue().extended(file.models if file else (), origin=file.origin if file else "",
                                         local_window=self.settings.llm.local_context_window)

    @cached_property
    def router(self) -> Router:
        """The LLM router over the deployments of AIOS_LLM_CONFIG or AIOS_LLM_DEPLOYMENTS (or the one
        provider AIOS_LLM picks)."""
        from aios.agents.llm.factory import file_deployments, make_deployments
        from aios.agents.llm.privacy import PiiDetector
        from aios.agents.llm.router import Router, RouterConfig
        from aios.streams.metrics import RouterMetrics

        s = self.settings
        file = self.llm_file
        if file is not None and file.deployments:
            if s.llm.deployments:
                raise ConfigError(f"AIOS_LLM_DEPLOYMENTS and the deployments of AIOS_LLM_CONFIG ({file.origin}) "
                                  "are both set: keep one")
            # The file names the variables that hold its keys; they are read here, at the edge.
            keys = {e.api_key_env: os.environ.get(e.api_key_env, "") for e in file.deployments if e.api_key_env}
            deployments = file_deployments(llm_config(s), file, self.catalogue, keys)
        else:
            deployments = make_deployments(llm_config(s), s.llm.deployments, self.catalogue)
        regions = s.llm.pii_phone_regions
        detector = PiiDetector() if regions is None else PiiDetector(phone_regions=regions)
        config = RouterConfig(redact_remote=s.llm.pii_mode == "redact", max_retries=s.llm.max_retries,
                              max_queue_s=s.llm.max_queue_s)
        shared = self.llm_rates if s.llm.shared_limits else None
        return Router(deployments, config=config, detector=detector, observer=RouterMetrics(), shared=shared)

    @cached_property
    def llm_rates(self) -> SharedRates:
        """Redis token buckets for the rpm and tpm agent workers share (AIOS_LLM_SHARED_LIMITS)."""
        from aios.connectors.context.ratelimit import SharedRates

        return SharedRates.from_url(self.settings.stores.redis_url, prefix=self.settings.kafka.topic_prefix)

    @cached_property
    def artifacts(self) -> ArtifactStore:
        """Where agents' files and oversized outputs go (AIOS_ARTIFACTS_URL, else the data directory)."""
        from aios.streams.artifacts import open_artifact_store

        return open_artifact_store(self.settings)

    @cached_property
    def journal(self) -> LlmJournal:
        """LLM answers by (task, attempt, step), so a replayed assignment never calls again."""
        from aios.connectors.context.journal import LlmJournal

        s = self.settings
        return LlmJournal.from_url(s.stores.redis_url, prefix=s.kafka.topic_prefix, ttl_s=s.llm.journal_ttl_s)

    async def aclose(self) -> None:
        if "context" in self.__dict__:
            await self.context.aclose()
        if "vector" in self.__dict__:
            await self.in_vector_thread(self.vector.close)
        if "vector_executor" in self.__dict__:
            self.vector_executor.shutdown(wait=True)
        if "router" in self.__dict__:
            for deployment in self.router.deployments:
                await deployment.provider.aclose()
        if "journal" in self.__dict__:
            await self.journal.aclose()
        if "llm_rates" in self.__dict__:
            await self.llm_rates.aclose()
