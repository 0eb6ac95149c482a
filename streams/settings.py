"""Every AIOS setting, read once from the environment (prefix ``AIOS_``) at the edge, in groups.

Each group is a frozen model that the layer needing it receives: ``kafka`` (brokers, topics,
security), ``stores`` (Redis, ClickHouse, Qdrant, the data directory), ``llm`` (providers and the
router), ``memory`` (context windows, embeddings, recall, prompt budgets), ``processing`` (roles,
workers, the orchestrator, the history sink), ``api`` and ``observability``. Nothing below
``streams/`` reads the environment: these objects, or typed configs derived from them, are passed
down. The variable names are flat (``AIOS_KAFKA_BOOTSTRAP``, ``AIOS_TOPIC_PREFIX``), as
docs/settings.md lists them; :func:`load_settings` takes the same flat names as overrides.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlparse

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from aios.schemas.errors import ConfigError
from aios.schemas.limits import DEFAULT_MAX_MESSAGE_BYTES, MAX_OUTPUT_BYTES, MIN_MAX_MESSAGE_BYTES
from aios.schemas.sealed import KeyRing

_TOPIC_PREFIX = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_ROLE = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
_ARTIFACTS_URL = re.compile(r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s?#]*)?|file:///[^\s?#]*)$")
_SCOPES = ("session", "project", "agent", "task")
_AGENT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


def _env(name: str, *more: str) -> Any:
    """Read this field from ``AIOS_<NAME>`` (and any fallbacks), whatever the group's prefix."""
    return AliasChoices(f"AIOS_{name.upper()}", *more)


def _registry_roles() -> tuple[str, ...]:
    from aios.agents.roles import load_roles

    return load_roles().names()


def _csv(value: object) -> object:
    if isinstance(value, str):
        value = tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class _Group(BaseSettings):
    """A group of settings; its fields' variables are ``<env_prefix><FIELD>`` unless they say otherwise."""

    model_config = SettingsConfigDict(env_prefix="AIOS_", frozen=True, extra="ignore", env_ignore_empty=True,
                                      populate_by_name=True)


class KafkaSettings(_Group):
    """Brokers, topics, the schema registry and Kafka security (every Kafka client gets these)."""

    model_config = SettingsConfigDict(env_prefix="AIOS_KAFKA_")

    bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, host:port[,…].")
    controller_port: int = Field(9093, description="KRaft controller port of the local broker.")
    heap_mb: int = Field(
        1536, ge=256, description="Java heap of the local broker; thousands of partitions need more than 512 MB.")
    local_brokers: int = Field(
        1, ge=1, le=9,
        description="Brokers `aios dev up` starts (or `--brokers`): 1, or a local KRaft cluster where each broker "
        "is also a controller. AIOS_KAFKA_BOOTSTRAP then lists one loopback address per broker; their "
        "controllers listen on AIOS_KAFKA_CONTROLLER_PORT and the ports after it.")
    connect_timeout_s: float = Field(
        30.0, gt=0, le=600,
        description="How long a starting process or command waits for Kafka to answer before it fails. A refused "
        "SASL login or an untrusted certificate fails at once, naming the setting to fix.")
    fetch_wait_ms: int = Field(
        500, ge=1, le=10_000,
        description="How long a consumer's fetch waits at the broker when there is nothing new. A record arriving "
        "ends the wait at once, so this bounds idle polling, not latency: lower values cost broker and client CPU "
        "while a pipeline idles and gain nothing measurable (docs/benchmarks.md). Readers that wait for the end of "
        "a partition (a state read back, the agent registry, the live view) keep 10 ms.")
    session_timeout_s: float = Field(
        10.0, ge=6, le=300,
        description="Consumer group session timeout: how soon the partitions of a crashed process move on.")
    topic_prefix: str = Field("aios", validation_alias=_env("topic_prefix"),
                              description="Prefix of every topic name (aios.tasks), Redis key and Qdrant collection.")
    topic_partitions: int = Field(3, ge=1, le=1024, validation_alias=_env("topic_partitions"),
                                  description="Partitions of every topic `aios topics create` makes.")
    topic_replication: int | None = Field(
        None, ge=1, le=16, validation_alias=_env("topic_replication"),
        description="Replication factor of every topic. Unset: from the cluster, 3 when it has three brokers or "
        "more, else one copy per broker.")
    topic_min_insync_replicas: int | None = Field(
        None, ge=1, le=16, validation_alias=_env("topic_min_insync_replicas"),
        description="min.insync.replicas of every topic: the copies an acks=all write needs. Unset: 2 when "
        "topics have 3 copies or more (one broker may be lost without refusing writes), else 1.")
    topic_retention_ms: int = Field(7 * 24 * 3600 * 1000, ge=-1, validation_alias=_env("topic_retention_ms"),
                                    description="Retention of the event topics (the DLQ keeps four times longer).")
    max_message_bytes: int = Field(
        DEFAULT_MAX_MESSAGE_BYTES, ge=MIN_MAX_MESSAGE_BYTES, le=100 * 1024 * 1024,
        validation_alias=_env("max_message_bytes"),
        description="The largest event AIOS produces (key, value and record overhead). `aios topics create` "
        "gives every topic this max.message.bytes; a larger event is refused with its size as the reason "
        "(dead-lettered when a processor built it). Every event is bounded well below the least allowed value.")
    schema_registry_url: str | None = Field(
        None, validation_alias=_env("schema_registry_url"),
        description="Confluent-compatible schema registry; unset = Avro single-object encoding.")
    transaction_timeout_ms: int = Field(
        10_000, ge=1000, le=900_000, validation_alias=_env("transaction_timeout_ms"),
        description="How long an open transaction of a dead orchestrator or results committer can hold "
        "back read_committed readers.")
    security_protocol: str = Field(
        "PLAINTEXT", pattern=r"^(PLAINTEXT|SSL|SASL_PLAINTEXT|SASL_SSL)$",
        description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.")
    sasl_mechanism: str | None = Field(
        None, pattern=r"^(PLAIN|SCRAM-SHA-256|SCRAM-SHA-512)$", description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.")
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(None, description="SASL password.")
    ssl_cafile: Path | None = Field(None, description="CA bundle that signed the brokers' certificates.")
    ssl_certfile: Path | None = Field(None, description="Client certificate (mutual TLS).")
    ssl_keyfile: Path | None = Field(None, description="Client private key (mutual TLS).")

    @model_validator(mode="after")
    def _check_min_insync(self) -> KafkaSettings:
        if (self.topic_replication is not None and self.topic_min_insync_replicas is not None
                and self.topic_min_insync_replicas > self.topic_replication):
            raise ValueError(
                f"AIOS_TOPIC_MIN_INSYNC_REPLICAS={self.topic_min_insync_replicas} is more than "
                f"AIOS_TOPIC_REPLICATION={self.topic_replication}: no write could ever succeed; lower it")
        return self

    @field_validator("topic_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not _TOPIC_PREFIX.match(value):
            raise ValueError(f"AIOS_TOPIC_PREFIX={value!r}: use 1-64 characters from A-Z a-z 0-9 . _ -")
        return value

    def security(self) -> dict[str, str]:
        """librdkafka security properties (empty for PLAINTEXT), for every confluent-kafka client."""
        config: dict[str, str] = {}
        if self.security_protocol != "PLAINTEXT":
            config["security.protocol"] = self.security_protocol
        if self.sasl_mechanism:
            config["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            config["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            config["sasl.password"] = self.sasl_password.get_secret_value()
        for key, path in (("ssl.ca.location", self.ssl_cafile),
                          ("ssl.certificate.location", self.ssl_certfile),
                          ("ssl.key.location", self.ssl_keyfile)):
            if path is not None:
                config[key] = str(path)
        return config

    @property
    def port(self) -> int:
        """Port of the first bootstrap server (the local broker's listener)."""
        first = self.bootstrap.split(",")[0]
        return int(first.rsplit(":", 1)[1])


class StoreSettings(_Group):
    """Where state lives: the data directory, Redis, ClickHouse and Qdrant."""

    data_dir: Path = Field(Path(".aios-data"), description="Local stack data: Kafka logs, Redis, chdb, Qdrant.")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis: rolling context, the LLM journal, API keys.")
    clickhouse_url: str | None = Field(
        None, description="ClickHouse server (http://user:pass@host:8123/db); unset = embedded chdb.")
    qdrant_url: str | None = Field(
        None, description="Qdrant server for vector memory; unset = qdrant-client local mode under data_dir.")
    history_ttl_days: int = Field(
        90, ge=1, le=36500, description="Days ClickHouse keeps history rows and rollups (table TTL).")
    clickhouse_http_port: int = Field(
        8123, ge=1, le=65535,
        description="Embedded mode: the loopback port where `aios up`'s chdb owner serves the ClickHouse HTTP "
        "interface, which the CLI, the API, Grafana and ClickHouse tools use while it runs.")
    clickhouse_tcp_port: int = Field(
        9000, ge=1, le=65535,
        description="Embedded mode: the loopback port of the same chdb's native protocol (clickhouse-client).")
    qdrant_local_port: int = Field(
        6333, ge=1, le=65535,
        description="Embedded mode with AIOS_VECTOR_MEMORY: the loopback port where `aios up`'s owner of the "
        "local Qdrant folder serves Qdrant's REST API to the agents, the memory processor and the CLI.")
    encryption_key: SecretStr | None = Field(
        None, description="Key ring for restricted tasks' content at rest: 'id:base64key[,id2:base64key…]' "
        "(16, 24 or 32-byte AES-GCM keys; `aios keys new-encryption-key` makes one). The first key seals the "
        "descriptions, outputs and memory of restricted tasks before they reach Kafka, Redis, Qdrant and "
        "ClickHouse; every key opens. Rotate by putting a new key first. Unset: stored as plain text.")

    artifacts_url: str | None = Field(
        None, description="Where agents' files and oversized outputs are kept (docs/artifacts.md): s3://bucket[/prefix] "
        "for an S3-compatible bucket (needs the s3 extra) or file:///folder. Unset: <AIOS_DATA_DIR>/artifacts.")
    artifacts_endpoint: str | None = Field(
        None, pattern=r"^https?://\S+$",
        description="The S3-compatible service's URL (MinIO, Ceph, R2); unset = AWS S3. http:// is allowed "
        "for a service on a private network.")
    artifacts_region: str = Field("us-east-1", pattern=r"^[a-z0-9-]{1,32}$", description="The bucket's region.")
    artifacts_access_key_id: str | None = Field(
        None, description="Access key id for the bucket; unset with the secret = unsigned requests (a public bucket).")
    artifacts_secret_access_key: SecretStr | None = Field(None, description="Secret of AIOS_ARTIFACTS_ACCESS_KEY_ID.")
    artifacts_max_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, le=5 * 1024**3,
        description="The largest artifact an agent may write; write_artifact answers a larger one with an error.")

    @field_validator("artifacts_url")
    @classmethod
    def _check_artifacts_url(cls, value: str | None) -> str | None:
        if value is not None and not _ARTIFACTS_URL.match(value):
            raise ValueError(f"{value!r}: use s3://bucket or s3://bucket/prefix (a bucket name is 3-63 of a-z 0-9 . -), "
                             "or file:///absolute/folder")
        return value

    @model_validator(mode="after")
    def _artifact_credentials_in_pairs(self) -> StoreSettings:
        if (self.artifacts_access_key_id is None) != (self.artifacts_secret_access_key is None):
            raise ValueError("set both AIOS_ARTIFACTS_ACCESS_KEY_ID and AIOS_ARTIFACTS_SECRET_ACCESS_KEY, or neither")
        return self

    @field_validator("encryption_key")
    @classmethod
    def _check_key_ring(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                KeyRing.parse(value.get_secret_value())
            except ConfigError as exc:
                raise ValueError(str(exc).removeprefix("AIOS_ENCRYPTION_KEY: ")) from None
        return value

    @property
    def redis_port(self) -> int:
        return urlparse(self.redis_url).port or 6379

    def key_ring(self) -> KeyRing | None:
        """The parsed AIOS_ENCRYPTION_KEY (None when unset)."""
        return None if self.encryption_key is None else KeyRing.parse(self.encryption_key.get_secret_value())


class RemoteAgentSettings(BaseModel):
    """One remote A2A agent a role may call as a tool (an entry of AIOS_A2A_AGENTS)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field(description="The agent's base URL; its card is read from <url>/.well-known/agent-card.json.")
    roles: tuple[str, ...] = Field((), description="Roles offered the tool; empty: every role.")
    token: SecretStr | None = Field(None, description="Sent as 'Authorization: Bearer <token>'.")
    timeout_s: float = Field(120.0, gt=0, le=3600, description="How long one call may take, polling included.")
    description: str = Field("", max_length=1000, description="What the agent does, for the model.")

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if urlparse(value).scheme not in ("http", "https") or not urlparse(value).netloc:
            raise ValueError(f"{value!r} is not an http(s) URL; give the remote agent's base URL")
        return value.rstrip("/")


class LlmSettings(_Group):
    """Which models answer, with what keys, and how the router treats them."""

    spec: str | None = Field(
        None, validation_alias=_env("llm"),
        description="'provider:model', e.g. openai:gpt-4o-mini or offline:echo. "
        "Unset: openai when an OpenAI key is set, else anthropic when an Anthropic key is, else the labelled "
        "offline provider. A remote model must be in agents/llm/models.json or in AIOS_LLM_CONFIG's [[models]] "
        "(its prices); an unknown one is an error at start-up, never $0. local:<any name> is free.")
    openai_api_key: SecretStr | None = Field(
        None, validation_alias=_env("openai_api_key", "OPENAI_API_KEY"), description="Also read as OPENAI_API_KEY.")
    openai_base_url: str | None = Field(
        None, validation_alias=_env("openai_base_url", "OPENAI_BASE_URL"),
        description="An OpenAI-compatible endpoint instead of api.openai.com (also read as OPENAI_BASE_URL).")
    anthropic_api_key: SecretStr | None = Field(
        None, validation_alias=_env("anthropic_api_key", "ANTHROPIC_API_KEY"),
        description="Also read as ANTHROPIC_API_KEY; needs the anthropic extra.")
    anthropic_base_url: str | None = Field(None, validation_alias=_env("anthropic_base_url"),
                                           description="An Anthropic-compatible endpoint.")
    local_base_url: str | None = Field(
        None, validation_alias=_env("local_llm_base_url"),
        description="OpenAI-compatible local server (Ollama, vLLM, llama.cpp) for AIOS_LLM=local:<model>.")
    timeout_s: float = Field(60.0, gt=0, validation_alias=_env("llm_timeout_s"),
                             description="Seconds one LLM call may take before it fails.")
    http_client: Literal["auto", "aiohttp", "httpx"] = Field(
        "auto", validation_alias=_env("llm_http_client"),
        description="The HTTP client under the OpenAI and Anthropic SDKs: aiohttp (the SDKs' aiohttp transport) "
        "spends less CPU per streamed call than httpx, the SDKs' default; auto picks aiohttp unless HTTPS_PROXY, "
        "HTTP_PROXY or ALL_PROXY is set, which only httpx reads.")
    max_retries: int = Field(
        2, ge=0, le=10, validation_alias=_env("llm_max_retries"),
        description="Times the router retries a transient failure (408, 409, 429, 5xx, timeouts) of one call, "
        "honouring retry-after; the SDKs themselves never retry.")
    deployments: Annotated[tuple[str, ...], NoDecode] = Field(
        (), validation_alias=_env("llm_deployments"),
        description="Router deployments, comma-separated 'provider:model' specs; unset = the one AIOS_LLM picks.")
    config_file: Path | None = Field(
        None, validation_alias=_env("llm_config"),
        description="A TOML or JSON file of router deployments (provider:model, base URL, the variable holding "
        "its key, weight, max_concurrent, rpm, tpm), of models newer than the packaged catalogue, with their "
        "prices, and of MCP servers with the tools each role may call ([mcp]); see docs/agents.md. Its "
        "deployments take the place of AIOS_LLM_DEPLOYMENTS (set one of them).")
    local_context_window: int | None = Field(
        None, ge=256, validation_alias=_env("local_context_window"),
        description="Context window of every local:<model>, as its server runs it (Ollama's context length, "
        "vLLM's --max-model-len, llama.cpp's -c); a model's entry in AIOS_LLM_CONFIG wins. Unset: the packaged "
        "catalogue's window for the models it lists, 8192 for any other name.")
    shared_limits: bool = Field(
        False, validation_alias=_env("llm_shared_limits"),
        description="Count each deployment's rpm and tpm in Redis, shared by every process with the same "
        "AIOS_TOPIC_PREFIX and deployment name: agent workers on one provider key keep to its limits together. "
        "max_concurrent stays per process; if Redis does not answer, each process keeps to its own limits.")
    max_queue_s: float = Field(
        120.0, ge=0, validation_alias=_env("llm_max_queue_s"),
        description="Longest an LLM call waits, in all, for a deployment to have room (its max_concurrent, rpm "
        "and tpm, a 429's retry-after) before it fails with QueueTimeoutError, which the orchestrator retries; "
        "0 never waits.")
    pii: Literal["redact", "local-only"] | None = Field(
        None, validation_alias=_env("llm_pii"),
        description="A prompt with detected PII (phone numbers, e-mail addresses, card numbers, API keys): "
        "'redact' lets remote models see it with those values masked, restored in the answer; 'local-only' keeps "
        "it on local deployments, and fails the call when there is none. Unset: redact, unless the older "
        "AIOS_LLM_REDACT_PII=0 says local-only. restricted tasks stay local either way.")
    redact_pii: bool | None = Field(
        None, validation_alias=_env("llm_redact_pii"),
        description="Before AIOS_LLM_PII: 1 is redact, 0 is local-only. AIOS_LLM_PII wins when both are set.")
    pii_phone_regions: Annotated[tuple[str, ...] | None, NoDecode] = Field(
        None, validation_alias=_env("llm_pii_phone_regions"),
        description="Countries (ISO 3166 codes, comma-separated) whose national phone formats are detected, "
        "e.g. 020 7946 0958 for GB; numbers with a country code (+44 …) are detected from anywhere. "
        "Unset: agents.llm.privacy.DEFAULT_PHONE_REGIONS.")
    journal_ttl_s: int = Field(
        7 * 24 * 3600, ge=60, validation_alias=_env("llm_journal_ttl_s"),
        description="How long LLM answers stay recorded by (task, attempt, step) for replays.")
    agent_tools: bool = Field(
        True, validation_alias=_env("agent_tools"),
        description="Offer agents the read-only tools (read a dependency's output, search memory).")
    mcp_timeout_s: float = Field(
        30.0, gt=0, le=3600, validation_alias=_env("mcp_timeout_s"),
        description="Seconds one MCP tool call may take before the model reads it as a timed-out tool call; "
        "a server's timeout_s in AIOS_LLM_CONFIG's [mcp] wins.")
    mcp_connect_timeout_s: float = Field(
        15.0, gt=0, le=600, validation_alias=_env("mcp_connect_timeout_s"),
        description="Seconds an agent worker waits for an MCP server to connect and list its tools at start; "
        "a server that does not offers no tools until the worker restarts.")
    a2a_agents: dict[str, RemoteAgentSettings] = Field(
        {}, validation_alias=_env("a2a_agents"),
        description="Remote A2A agents the roles may call as tools, as JSON: {\"name\": {\"url\": the agent's base URL "
        "(its card at /.well-known/agent-card.json), \"roles\": the roles offered the tool ask_<name> (empty: "
        "every role), \"token\": a bearer token, \"timeout_s\": how long one call may take, \"description\"}}. "
        "Each call is journaled by (task, attempt, step); restricted tasks are never offered them. Needs the a2a "
        "extra; see docs/agents.md.")

    @field_validator("a2a_agents")
    @classmethod
    def _check_agent_names(cls, value: dict[str, RemoteAgentSettings]) -> dict[str, RemoteAgentSettings]:
        for name in value:
            if not _AGENT_NAME.match(name):
                raise ValueError(f"remote agent name {name!r}: use a-z, 0-9 and _ (a letter first, at most 40), "
                                 "since the model calls it as the tool ask_<name>")
        return value

    @field_validator("deployments", "pii_phone_regions", mode="before")
    @classmethod
    def _split_lists(cls, value: object) -> object:
        return _csv(value)

    @field_validator("config_file")
    @classmethod
    def _config_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value} (a .toml or .json file; see docs/agents.md)")
        return value

    @property
    def pii_mode(self) -> Literal["redact", "local-only"]:
        """What happens to a prompt with PII when only remote deployments could take it."""
        if self.pii is not None:
            return self.pii
        # AIOS_LLM_REDACT_PII=0 kept PII on local models: a deployment that set it keeps that
        # behaviour under the new default, rather than starting to send masked prompts out.
        return "local-only" if self.redact_pii is False else "redact"


class MemorySettings(_Group):
    """Rolling context windows, embeddings and recall, and the prompt budgets memory must fit in."""

    embedding_model_dir: Path = Field(
        Path("../shared/models/all-MiniLM-L6-v2-onnx"),
        description="ONNX all-MiniLM-L6-v2 model folder: embeddings (vector extra) and token counts of context "
        "windows (a labelled whitespace count without it).")
    embeddings: str = Field(
        "local", description="'local' (the ONNX model in embedding_model_dir) or 'openai:<model>', e.g. "
        "openai:text-embedding-3-small, with AIOS_OPENAI_API_KEY (and AIOS_OPENAI_BASE_URL).")
    embedding_dimension: int = Field(
        384, ge=1, le=4096, description="Vector size asked of provider embeddings (the local model gives 384).")
    context_window_turns: int = Field(50, ge=1, description="Turns kept per rolling-context window.")
    context_window_tokens: int = Field(
        2000, ge=1, description="Tokens kept per window; older turns fold into its running summary.")
    context_trim_to: float = Field(
        0.8, gt=0, le=1, description="A window over a bound is trimmed to this fraction of its bounds, so "
        "turns fold into the summary (an LLM call) in chunks; 1 folds on every turn of a full window.")
    context_summary_tokens: int = Field(
        300, ge=16, description="Token budget of a window's running summary. The configured LLM writes it (an "
        "LlmCall with strategy memory-summary); with only the offline provider, or when that call fails, it is "
        "extractive and labelled [extractive summary].")
    context_ttl_s: int = Field(7 * 24 * 3600, ge=1, description="Default TTL of a window after its last write.")
    context_scope_ttl_s: dict[str, int] = Field(
        default_factory=lambda: {"session": 24 * 3600, "task": 24 * 3600},
        description="TTL per scope (JSON, e.g. {\"task\": 3600}); scopes not named use context_ttl_s.")
    context_scope_turns: dict[str, int] = Field(
        default_factory=dict,
        description="Turns kept per scope (JSON, e.g. {\"task\": 10}); scopes not named use context_window_turns.")
    context_scope_tokens: dict[str, int] = Field(
        default_factory=dict,
        description="Tokens kept per scope (JSON, e.g. {\"agent\": 800}); others use context_window_tokens.")
    prompt_tokens: int = Field(3000, ge=64, description="Default prompt budget (system + user) per role.")
    role_prompt_tokens: dict[str, int] = Field(
        default_factory=dict, description="Prompt budget per role (JSON, e.g. {\"planner\": 6000}).")
    vector_memory: bool = Field(
        False, description="Index turns and summaries into Qdrant and give agents recall (the top "
        "AIOS_RECALL_TOP_K above AIOS_RECALL_THRESHOLD of their project). Needs the vector extra. Off by "
        "default: embedding costs ~ms per event on a small CPU.")
    recall_top_k: int = Field(3, ge=1, le=50, description="Memories recalled into a prompt.")
    recall_threshold: float = Field(0.35, ge=-1.0, le=1.0, description="Least cosine score a recalled memory needs.")

    @field_validator("embeddings")
    @classmethod
    def _check_embeddings(cls, value: str) -> str:
        provider, _, model = value.strip().partition(":")
        if value.strip() != "local" and (provider != "openai" or not model.strip()):
            raise ValueError(f"AIOS_EMBEDDINGS={value!r}: use 'local' or 'openai:<model>', "
                             "e.g. openai:text-embedding-3-small")
        return value.strip()

    @field_validator("context_scope_ttl_s", "context_scope_turns", "context_scope_tokens")
    @classmethod
    def _check_scope_policy(cls, value: dict[str, int], info: ValidationInfo) -> dict[str, int]:
        for scope, amount in value.items():
            if scope not in _SCOPES or amount < 1:
                raise ValueError(
                    f"AIOS_{str(info.field_name).upper()}: {scope}={amount} is not valid; name scopes from "
                    f"{', '.join(_SCOPES)}, each with a value of at least 1")
        return value

    def ttl_for(self, scope: str) -> int:
        """Seconds a window of ``scope`` lives after its last write."""
        return self.context_scope_ttl_s.get(scope, self.context_ttl_s)

    def turns_for(self, scope: str) -> int:
        """Turns a window of ``scope`` keeps before folding the oldest into its summary."""
        return self.context_scope_turns.get(scope, self.context_window_turns)

    def tokens_for(self, scope: str) -> int:
        """Tokens a window of ``scope`` keeps before folding the oldest into its summary."""
        return self.context_scope_tokens.get(scope, self.context_window_tokens)

    def prompt_budget_for(self, role: str) -> int:
        """Prompt tokens (system + user) an agent of ``role`` may use."""
        return self.role_prompt_tokens.get(role, self.prompt_tokens)


class ProcessingSettings(_Group):
    """How the processors run: roles, workers, the orchestrator's limits, the history sink's batches."""

    roles: Annotated[tuple[str, ...], NoDecode] = Field(
        default_factory=lambda: _registry_roles(),
        description="Agent roles, comma-separated, from agents/roles.json; each gets a topic and a consumer "
        "group. Unset: every role in the registry, so a deployment serves any plan or goal.")
    agent_groups: Annotated[tuple[tuple[str, ...], ...], NoDecode] = Field(
        (), description="How `aios up` spreads the roles over agent worker processes: groups separated by "
        "';', roles within one by ',', e.g. 'planner;backend,frontend'. Roles in no group share one more "
        "process. Unset: one agent process serves every role.")
    agent_forget_after_s: float = Field(
        300.0, gt=0,
        description="An agent silent this long is dropped from `aios agents`, `aios top` and the dashboard, "
        "and the orchestrator tombstones its key on the agents topic. Silent for three heartbeats, it is "
        "shown as gone first. One that stops cleanly tombstones its own key.")
    restart_backoff_max_s: float = Field(
        30.0, ge=0.1,
        description="`aios up` restarts a crashed process after 0.5 s, doubling each time up to this; a "
        "process that ran a minute starts again from 0.5 s.")
    instance: str = Field(
        "0", pattern=r"^[A-Za-z0-9._-]{1,64}$",
        description="This process's stable name among peers running the same processors; names its "
        "Kafka transactional id, so a restarted process fences its killed predecessor at once.")
    heartbeat_interval_s: float = Field(5.0, gt=0, description="How often agent workers publish AgentStatus.")
    drain_timeout_s: float = Field(60.0, gt=0, description="How long a stopping worker waits for in-flight tasks.")
    assign_timeout_s: float = Field(
        60.0, gt=0, le=3600,
        description="How long a starting processor waits for its consumer group to give it partitions before it "
        "exits saying so (a topic missing, or more members than partitions).")
    agent_max_in_flight: int = Field(
        256, ge=1, le=10_000,
        description="Assignments one agent worker works on at once, across and within its partitions; when "
        "they are all in flight it pauses fetching. LLM calls take seconds, so this, not partitions, is what "
        "scales a role.")
    token_interval_ms: int = Field(
        100, ge=0, le=60_000,
        description="Live tokens: while a call streams, its text so far goes to <prefix>.tokens at most this "
        "often per task (coalesced deltas); 0 publishes none.")
    output_inline_bytes: int = Field(
        64 * 1024, ge=1024, le=MAX_OUTPUT_BYTES,
        description="An agent's output over this many bytes of UTF-8 is kept whole in the artifact store (as "
        "output.md); its result carries an excerpt of this size that ends in the artifact's URI, which readers "
        "follow. Restricted tasks' outputs are never written there: over MAX_OUTPUT_BYTES they fail.")
    event_loop: Literal["auto", "uvloop", "asyncio"] = Field(
        "auto",
        description="The event loop of each processor process (`aios worker`, and `aios up`'s children): uvloop "
        "spends less CPU on every socket read of hundreds of streamed LLM calls than asyncio's own loop; auto "
        "picks uvloop where it is installed (Linux, macOS), else asyncio's.")
    commit_interval_s: float = Field(1.0, gt=0, description="How often the faust processors commit offsets.")
    ask_max_depth: int = Field(
        3, ge=0, le=32,
        description="How deep questions between agents may nest (ask_agent): a task asked by an agent is one "
        "deeper than its asker, and a question that would go deeper is answered with an error the model "
        "sees. 0 turns ask_agent off.")
    ask_timeout_s: float = Field(
        600.0, gt=0,
        description="How long an agent waits for the answer to one ask_agent question before the model is told "
        "there was none. Keep it under AIOS_TASK_TIMEOUT_S: the wait counts in the asker's attempt.")
    project_concurrency: int = Field(64, ge=1, description="Tasks of one project in flight at once.")
    sprint_approval: Literal["plan", "every"] = Field(
        "plan", description="plan: a sprint waits in awaiting_approval when its milestone says requires_approval; "
        "every: every sprint after the first waits for `aios approve MILESTONE --project P`.")
    role_concurrency: dict[str, int] = Field(
        default_factory=dict,
        description="Tasks of one role in flight at once within a project (JSON, e.g. {\"qa\": 2}).")
    task_timeout_s: float = Field(
        900.0, gt=0,
        description="An attempt with no outcome this long after an agent picked it up fails and is retried "
        "like any failure (a stuck agent, a lost worker); its late outcome is then ignored.")
    pickup_timeout_s: float = Field(
        3600.0, gt=0,
        description="An attempt no agent picked up this long after its dispatch fails and is retried (an "
        "assignment lost to retention, a role nobody serves). Longer than AIOS_TASK_TIMEOUT_S: a backlog on a "
        "role topic is normal and must not cause re-dispatches.")
    orchestrator_group_fencing: bool = Field(
        False,
        description="Also commit the orchestrator's input offsets to its consumer group inside each "
        "transaction, so a member that stalled past its session while its partitions moved cannot "
        "commit a stale batch. Costs two coordinator round trips per batch; set it when more than "
        "one orchestrator runs (a single one is fenced by its transactional id).")
    finished_project_retention_s: float = Field(
        3600.0, ge=0,
        description="How long the orchestrator keeps a finished project's tasks (their outputs can still "
        "be depended on by new tasks); after that only its counts stay, in memory and in its state log.")
    # consume() returns at AIOS_SINK_FLUSH_S or a full batch, whichever comes first: a large batch
    # costs no latency when traffic is light, and under backlog each chdb INSERT's fixed cost (a
    # part per table and per rollup view, 50-80 ms in all) is paid once per 50,000 events: ~100k
    # rows/s against ~60k at 10,000 (docs/benchmarks.md), for ~25 MB of events held per batch.
    sink_batch_size: int = Field(50000, ge=1, description="Events the history sink stores per batch at most.")
    sink_flush_s: float = Field(0.5, gt=0, description="How long the history sink waits to fill a batch.")
    ingress_submitters: dict[str, tuple[str, ...]] | None = Field(
        None, description="Who may create tasks in which projects through the JSON ingress (JSON, e.g. "
        "{\"crm-connector\": [\"sales\"], \"ops\": [\"*\"]}): a record's submitted_by (\"json\" when it has "
        "none) must be named, with the record's project or '*'; other records go to the DLQ with the reason. "
        "submitted_by is what the producer says: Kafka ACLs on the ingress topic decide who may produce "
        "(docs/api.md). Unset: any submitter, any project.")

    @field_validator("ingress_submitters")
    @classmethod
    def _check_submitters(cls, value: dict[str, tuple[str, ...]] | None) -> dict[str, tuple[str, ...]] | None:
        for who, projects in (value or {}).items():
            if not who.strip() or not projects or not all(p.strip() for p in projects):
                raise ValueError(f"submitter {who!r}: name at least one project (or '*') for each submitter")
        return value

    @field_validator("roles", mode="before")
    @classmethod
    def _split_roles(cls, value: object) -> object:
        return _csv(value)

    @field_validator("agent_groups", mode="before")
    @classmethod
    def _split_groups(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(tuple(_csv(group)) for group in value.split(";") if group.strip())  # type: ignore[arg-type]
        return value

    @field_validator("agent_groups")
    @classmethod
    def _check_groups(cls, value: tuple[tuple[str, ...], ...], info: ValidationInfo) -> tuple[tuple[str, ...], ...]:
        roles = set(info.data.get("roles", ()))
        seen: set[str] = set()
        for group in value:
            for role in group:
                if role not in roles:
                    raise ValueError(f"AIOS_AGENT_GROUPS names {role!r}, which AIOS_ROLES does not "
                                     f"({', '.join(sorted(roles))})")
                if role in seen:
                    raise ValueError(f"AIOS_AGENT_GROUPS names {role!r} twice; a role belongs to one group")
                seen.add(role)
        return value

    def agent_processes(self) -> list[tuple[str, ...]]:
        """The role groups `aios up` runs, one agent process each (every role in exactly one)."""
        groups = [tuple(g) for g in self.agent_groups]
        rest = tuple(r for r in self.roles if not any(r in g for g in groups))
        return [*groups, rest] if rest else groups

    @field_validator("roles")
    @classmethod
    def _check_roles(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from aios.agents.roles import load_roles

        if not value:
            raise ValueError("AIOS_ROLES is empty: name at least one role, e.g. AIOS_ROLES=general")
        registry = load_roles()
        for role in value:
            if not _ROLE.match(role):
                raise ValueError(f"AIOS_ROLES: {role!r} is not a valid role name "
                                 "(lowercase letter first, then a-z 0-9 _ -, at most 40 characters)")
            if role not in registry:
                raise ValueError(f"AIOS_ROLES: unknown role {role!r}; known roles: {', '.join(registry.names())} "
                                 "(add one to agents/roles.json)")
        return value


class ApiSettings(_Group):
    """``aios api`` (and the API inside ``aios up``): binding, TLS, limits and credentials."""

    model_config = SettingsConfigDict(env_prefix="AIOS_API_")

    host: str = Field("127.0.0.1", description="Address the API binds to (0.0.0.0 in containers).")
    port: int = Field(8000, ge=0, le=65535, description="API port; 0 lets `aios up` run without the API.")
    tls_certfile: Path | None = Field(None, description="Serve HTTPS with this certificate (PEM).")
    tls_keyfile: Path | None = Field(None, description="The private key of AIOS_API_TLS_CERTFILE (PEM).")
    cors_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="Origins allowed by CORS, comma-separated; empty allows none.")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Larger request bodies get 413.")
    rate_per_s: float = Field(50.0, gt=0, description="Requests per second per API key or token subject.")
    rate_burst: int = Field(100, ge=1, description="Requests a key may make at once before the rate applies.")
    jwks_url: str | None = Field(None, description="OIDC JWKS URL; set it to accept JWT bearer tokens.")
    jwt_issuer: str | None = Field(None, description="Required `iss` of JWT bearer tokens.")
    jwt_audience: str | None = Field(None, description="Required `aud` of JWT bearer tokens.")
    jwks_refetch_cooldown_s: float = Field(
        30.0, ge=0, description="Least time between JWKS refetches for an unknown key id (rotation).")
    jwt_role_claim: str = Field("aios_role", description="Claim holding the token's AIOS role.")
    jwt_projects_claim: str = Field("aios_projects", description="Claim listing the token's projects ('*': all).")
    ws_queue: int = Field(1000, ge=1, description="Events a WebSocket client may lag behind before it is closed.")
    ws_per_key: int = Field(
        8, ge=1, le=10_000, description="WebSocket connections one API key or token subject may hold at once; "
        "the next is closed with code 4429.")
    ws_recheck_s: float = Field(
        10.0, gt=0, le=3600, description="How often an open WebSocket's API key is checked again: a revoked key's "
        "connections close within this long (a token's close when it expires).")
    view_tasks_per_project: int = Field(
        10_000, ge=1, description="Tasks the live view remembers per project (the oldest of that project go "
        "first), so no project can push another's tasks out.")
    view_tasks: int = Field(
        200_000, ge=1, description="Tasks the live view remembers in all; over it, the project holding the most "
        "loses its oldest.")
    kafka_sample_s: float = Field(
        5.0, gt=0, le=300, description="How often the API samples topics' end offsets and consumer groups' lag for "
        "the dashboard's Kafka view.")
    kafka_history_s: int = Field(
        3600, ge=60, le=86_400, description="How long the API keeps those samples in memory (the lag chart's "
        "window); a restarted API starts with an empty chart.")
    a2a: bool = Field(
        True, description="Serve each role as an A2A agent (its card at /.well-known/agent-card.json, JSON-RPC at "
        "/v1/a2a); needs the a2a extra. See docs/api.md.")
    a2a_wait_s: float = Field(
        60.0, ge=0, le=3600, description="How long an A2A message/send waits for the task's result before it "
        "answers with the task still working (the caller then polls tasks/get).")
    a2a_url: str | None = Field(
        None, description="The API's public base URL, as the A2A cards advertise it; unset: the URL each request "
        "came to.")

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        return _csv(value)

    @model_validator(mode="after")
    def _jwt_needs_issuer_and_audience(self) -> ApiSettings:
        # A token from any issuer, or minted for another service of the same identity provider,
        # would otherwise be accepted: refuse to run half-configured.
        if self.jwks_url and not (self.jwt_issuer and self.jwt_audience):
            missing = [n for n, v in (("AIOS_API_JWT_ISSUER", self.jwt_issuer),
                                      ("AIOS_API_JWT_AUDIENCE", self.jwt_audience)) if not v]
            raise ValueError(f"AIOS_API_JWKS_URL is set, so JWTs are accepted: set {' and '.join(missing)} too "
                             "(the issuer and the audience your identity provider puts in tokens for AIOS)")
        return self


class ObservabilitySettings(_Group):
    """Metrics, traces and logs."""

    metrics_port: int = Field(9464, ge=0, le=65535, description="Prometheus /metrics; 0 disables.")
    metrics_host: str = Field("127.0.0.1", description="Address /metrics binds to (0.0.0.0 in containers).")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "WARNING", description="DEBUG, INFO, WARNING or ERROR. Libraries' own retries (librdkafka, faust, "
        "aiokafka) log their warnings at INFO.")
    log_format: Literal["text", "json"] = Field(
        "text", description="text: one line per event for people; json: one JSON object per line. "
        "Either way each carries time, level, process, processor and the task, project and trace ids in scope.")
    otlp_endpoint: str | None = Field(
        None, description="OTLP/HTTP collector base URL (spans go to <url>/v1/traces); unset, no spans are made "
        "and no SDK is loaded. Kafka records carry traceparent either way.")
    otel_capture_content: bool = Field(
        False, description="Put prompts, answers and tool arguments on spans (gen_ai.input.messages, ...); "
        "never for restricted tasks.")
    otel_service_name: str | None = Field(
        None, description="service.name of this process's spans; default aios-<process> (aios-agents, aios-api).")
    dlq_replay_limit: int = Field(
        3, ge=1, le=1000, description="How many times the same dead-lettered record (its key and bytes) may be "
        "replayed; past it `aios dlq replay` and the API refuse, so a record that keeps failing cannot loop.")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("otlp_endpoint")
    @classmethod
    def _http_endpoint(cls, value: str | None) -> str | None:
        if not value:
            return None  # "" turns tracing off, as unset does
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an OTLP/HTTP URL: give http(s)://host:4318 (the collector's "
                             "OTLP/HTTP port; gRPC is not supported)")
        return value.rstrip("/")


GROUPS: dict[str, type[_Group]] = {
    "kafka": KafkaSettings, "stores": StoreSettings, "llm": LlmSettings, "memory": MemorySettings,
    "processing": ProcessingSettings, "api": ApiSettings, "observability": ObservabilitySettings,
}


def env_name(group: type[_Group], field: str) -> str:
    """The variable a field is read from, e.g. ``AIOS_KAFKA_BOOTSTRAP`` or ``AIOS_TOPIC_PREFIX``."""
    alias = group.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return f"{group.model_config.get('env_prefix', '')}{field}".upper()


def env_names() -> set[str]:
    """Every environment variable AIOS reads, fallbacks (``OPENAI_API_KEY``) included."""
    names: set[str] = set()
    for group in GROUPS.values():
        for field, info in group.model_fields.items():
            alias = info.validation_alias
            if isinstance(alias, AliasChoices):
                names |= {str(choice).upper() for choice in alias.choices if isinstance(choice, str)}
            else:
                names.add(env_name(group, field))
    return names


def _flat_names() -> dict[str, tuple[str, str]]:
    """Flat override name (the variable without ``AIOS_``, lowercased) -> (group, field)."""
    out: dict[str, tuple[str, str]] = {}
    for name, group in GROUPS.items():
        for field in group.model_fields:
            out[env_name(group, field).removeprefix("AIOS_").lower()] = (name, field)
    return out


class Settings(BaseModel):
    """Typed configuration for every AIOS process: one frozen model per group."""

    model_config = ConfigDict(frozen=True)

    kafka: KafkaSettings
    stores: StoreSettings
    llm: LlmSettings
    memory: MemorySettings
    processing: ProcessingSettings
    api: ApiSettings
    observability: ObservabilitySettings

    FLAT: ClassVar[dict[str, tuple[str, str]]]

    def replace(self, **flat: object) -> Settings:
        """A copy with some settings changed, named as :func:`load_settings` names them (validated)."""
        groups: dict[str, _Group] = {}
        problems: list[str] = []
        for name, changes in _route(flat).items():
            current: _Group = getattr(self, name)
            if not changes:
                groups[name] = current
                continue
            try:
                groups[name] = type(current)(**{**current.model_dump(), **changes})
            except ValidationError as exc:
                problems += _problems(type(current), name, exc)
        if problems:
            raise ConfigError("invalid AIOS settings:\n  " + "\n  ".join(problems))
        return Settings.model_validate(groups)

    def items(self) -> Iterator[tuple[str, object]]:
        """Every setting as (variable name, value), for docs and diagnostics."""
        for name, group in GROUPS.items():
            values = getattr(self, name)
            for field in group.model_fields:
                yield env_name(group, field), getattr(values, field)


Settings.FLAT = _flat_names()


def _route(flat: dict[str, object]) -> dict[str, dict[str, object]]:
    by_group: dict[str, dict[str, object]] = {name: {} for name in GROUPS}
    for key, value in flat.items():
        target = Settings.FLAT.get(key)
        if target is None:
            raise ConfigError(f"unknown setting {key!r}; see docs/settings.md for the settings that exist")
        by_group[target[0]][target[1]] = value
    return by_group


def load_settings(**overrides: object) -> Settings:
    """Read the environment once; explicit overrides (flat names, e.g. ``kafka_bootstrap``,
    ``topic_prefix``, ``data_dir``) win. A bad value is a ``ConfigError`` naming the variable."""
    groups: dict[str, _Group] = {}
    problems: list[str] = []
    for name, values in _route(overrides).items():
        group = GROUPS[name]
        try:
            groups[name] = group(**values)
        except ValidationError as exc:
            problems += _problems(group, name, exc)
    if problems:
        raise ConfigError("invalid AIOS settings:\n  " + "\n  ".join(problems))
    return Settings.model_validate(groups)


def _problems(group: type[_Group], name: str, exc: ValidationError) -> list[str]:
    """Each validation error as one line that names the variable to fix."""
    out = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else ""
        where = env_name(group, field) if field in group.model_fields else field or name
        out.append(f"{where}: {err['msg']}")
    return out
