"""Every AIOS setting, read once from the environment (prefix ``AIOS_``) at the edge.

Nothing below ``streams/`` reads the environment: this object (or typed configs derived from it)
is passed down.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

_TOPIC_PREFIX = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_ROLE = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")


class Settings(BaseSettings):
    """Typed configuration for every AIOS process."""

    model_config = SettingsConfigDict(env_prefix="AIOS_", frozen=True, extra="ignore", env_ignore_empty=True)

    data_dir: Path = Field(Path(".aios-data"), description="Local stack data: Kafka logs, Redis, chdb.")

    # Kafka
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, host:port[,…].")
    kafka_controller_port: int = Field(9093, description="KRaft controller port of the local broker.")
    kafka_heap_mb: int = Field(
        1536, ge=256, description="Java heap of the local broker; thousands of partitions need more than 512 MB.")
    topic_prefix: str = Field("aios", description="Prefix of every topic name, e.g. aios.tasks.")
    topic_partitions: int = Field(3, ge=1, le=1024)
    topic_replication: int = Field(1, ge=1, le=16)
    topic_retention_ms: int = Field(7 * 24 * 3600 * 1000, ge=-1)
    schema_registry_url: str | None = Field(
        None, description="Confluent-compatible schema registry; unset = Avro single-object encoding."
    )

    # Stores
    redis_url: str = Field("redis://127.0.0.1:6379/0")
    clickhouse_url: str | None = Field(
        None, description="ClickHouse server (http://user:pass@host:8123/db); unset = embedded chdb."
    )
    qdrant_url: str | None = Field(
        None, description="Qdrant server for vector memory; unset = qdrant-client local mode under data_dir."
    )
    embedding_model_dir: Path = Field(
        Path("../shared/models/all-MiniLM-L6-v2-onnx"), description="ONNX all-MiniLM-L6-v2 model folder."
    )
    embeddings: str = Field(
        "local", description="'local' (the ONNX model in embedding_model_dir) or 'openai:<model>', e.g. "
        "openai:text-embedding-3-small, with AIOS_OPENAI_API_KEY (and AIOS_OPENAI_BASE_URL).",
    )
    embedding_dimension: int = Field(
        384, ge=1, le=4096, description="Vector size asked of provider embeddings (the local model gives 384)."
    )
    history_ttl_days: int = Field(
        90, ge=1, le=36500, description="Days ClickHouse keeps history rows and rollups (table TTL)."
    )
    context_window_turns: int = Field(50, ge=1, description="Turns kept per rolling-context window.")
    context_window_tokens: int = Field(
        2000, ge=1, description="Tokens kept per window; older turns fold into its running summary."
    )
    context_trim_to: float = Field(
        0.8, gt=0, le=1, description="A window over a bound is trimmed to this fraction of its bounds, so "
        "turns fold into the summary (an LLM call) in chunks; 1 folds on every turn of a full window.",
    )
    context_summary_tokens: int = Field(300, ge=16, description="Token budget of a window's running summary.")
    context_ttl_s: int = Field(7 * 24 * 3600, ge=1, description="Default TTL of a window after its last write.")
    context_scope_ttl_s: dict[str, int] = Field(
        default_factory=lambda: {"session": 24 * 3600, "task": 24 * 3600},
        description="TTL per scope (JSON, e.g. {\"task\": 3600}); scopes not named use context_ttl_s.",
    )
    context_scope_turns: dict[str, int] = Field(
        default_factory=dict,
        description="Turns kept per scope (JSON, e.g. {\"task\": 10}); scopes not named use context_window_turns.",
    )
    context_scope_tokens: dict[str, int] = Field(
        default_factory=dict,
        description="Tokens kept per scope (JSON, e.g. {\"agent\": 800}); others use context_window_tokens.",
    )
    prompt_tokens: int = Field(3000, ge=64, description="Default prompt budget (system + user) per role.")
    role_prompt_tokens: dict[str, int] = Field(
        default_factory=dict, description="Prompt budget per role (JSON, e.g. {\"planner\": 6000})."
    )
    vector_memory: bool = Field(
        False,
        description="Index turns and summaries into Qdrant and give agents recall. Off by default: "
        "embedding costs ~ms per event and the local Qdrant folder is single-process.",
    )
    recall_top_k: int = Field(3, ge=1, le=50)
    recall_threshold: float = Field(0.35, ge=-1.0, le=1.0)

    # LLM
    llm: str | None = Field(
        None,
        description="'provider:model', e.g. openai:gpt-4o-mini or offline:echo. "
        "Unset: openai when a key is set, else the labelled offline provider.",
    )
    openai_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("AIOS_OPENAI_API_KEY", "OPENAI_API_KEY")
    )
    openai_base_url: str | None = Field(
        None, validation_alias=AliasChoices("AIOS_OPENAI_BASE_URL", "OPENAI_BASE_URL")
    )
    anthropic_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("AIOS_ANTHROPIC_API_KEY", "ANTHROPIC_API_KEY")
    )
    anthropic_base_url: str | None = Field(None, validation_alias=AliasChoices("AIOS_ANTHROPIC_BASE_URL"))
    local_llm_base_url: str | None = Field(
        None, description="OpenAI-compatible local server (Ollama, vLLM, llama.cpp) for AIOS_LLM=local:<model>."
    )
    llm_timeout_s: float = Field(60.0, gt=0)
    llm_max_retries: int = Field(2, ge=0, le=10)
    llm_deployments: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="Router deployments, comma-separated 'provider:model' specs; unset = the one AIOS_LLM picks."
    )
    llm_pii: Literal["redact", "local-only"] = Field(
        "redact", description="A prompt with detected PII (phone numbers, e-mail addresses, card numbers, API keys): "
        "'redact' lets remote models see it with those values masked, restored in the answer; 'local-only' keeps "
        "it on local deployments, and fails the call when there is none. restricted tasks stay local either way.",
    )
    llm_redact_pii: bool | None = Field(
        None, description="Before AIOS_LLM_PII: 1 is redact, 0 is local-only. AIOS_LLM_PII wins when both are set."
    )
    llm_pii_phone_regions: Annotated[tuple[str, ...] | None, NoDecode] = Field(
        None, description="Countries (ISO 3166 codes, comma-separated) whose national phone formats are detected, "
        "e.g. 020 7946 0958 for GB; numbers with a country code (+44 …) are detected from anywhere. "
        "Unset: agents.llm.privacy.DEFAULT_PHONE_REGIONS.",
    )
    llm_journal_ttl_s: int = Field(
        7 * 24 * 3600, ge=60, description="How long LLM answers stay recorded by (task, attempt, step) for replays."
    )
    agent_tools: bool = Field(
        True, description="Offer agents the read-only tools (read a dependency's output, search memory)."
    )
    heartbeat_interval_s: float = Field(5.0, gt=0, description="How often agent workers publish AgentStatus.")
    drain_timeout_s: float = Field(60.0, gt=0, description="How long a stopping worker waits for in-flight tasks.")

    # Processors
    roles: Annotated[tuple[str, ...], NoDecode] = Field(
        ("general",), description="Agent roles, comma-separated; each gets a topic and a consumer group."
    )
    metrics_port: int = Field(9464, ge=0, le=65535, description="Prometheus /metrics; 0 disables.")
    metrics_host: str = Field("127.0.0.1", description="Address /metrics binds to (0.0.0.0 in containers).")
    commit_interval_s: float = Field(1.0, gt=0, description="How often processors commit offsets.")
    project_concurrency: int = Field(64, ge=1, description="Tasks of one project in flight at once.")
    task_timeout_s: float = Field(
        900.0, gt=0,
        description="An attempt with no outcome after this long fails and is retried like any failure "
        "(a lost assignment, a stuck agent); its late outcome is then ignored.",
    )
    orchestrator_group_fencing: bool = Field(
        False,
        description="Also commit the orchestrator's input offsets to its consumer group inside each "
        "transaction, so a member that stalled past its session while its partitions moved cannot "
        "commit a stale batch. Costs two coordinator round trips per batch; set it when more than "
        "one orchestrator runs (a single one is fenced by its transactional id).",
    )
    finished_project_retention_s: float = Field(
        3600.0, ge=0,
        description="How long the orchestrator keeps a finished project's tasks (their outputs can still "
        "be depended on by new tasks); after that only its counts stay, in memory and in its state log.",
    )
    role_concurrency: dict[str, int] = Field(
        default_factory=dict,
        description="Tasks of one role in flight at once within a project (JSON, e.g. {\"qa\": 2}).",
    )
    kafka_session_timeout_s: float = Field(
        10.0, ge=6, le=300,
        description="Consumer group session timeout: how soon the partitions of a crashed process move on.",
    )
    instance: str = Field(
        "0", pattern=r"^[A-Za-z0-9._-]{1,64}$",
        description="This process's stable name among peers running the same processors; names its "
        "Kafka transactional id, so a restarted process fences its killed predecessor at once.",
    )
    transaction_timeout_ms: int = Field(
        10_000, ge=1000, le=900_000,
        description="How long an open transaction of a dead orchestrator or results committer can hold "
        "back read_committed readers.",
    )
    # consume() returns at AIOS_SINK_FLUSH_S or a full batch, whichever comes first: a large batch
    # costs no latency when traffic is light, and under backlog each chdb INSERT's fixed cost (a
    # part per table and per rollup view, 50-80 ms in all) is paid once per 50,000 events: ~100k
    # rows/s against ~60k at 10,000 (docs/benchmarks.md), for ~25 MB of events held per batch.
    sink_batch_size: int = Field(50000, ge=1)
    sink_flush_s: float = Field(0.5, gt=0)
    log_level: str = Field("WARNING")

    # Kafka security, passed to every Kafka client (confluent-kafka and faust/aiokafka).
    kafka_security_protocol: str = Field(
        "PLAINTEXT", pattern=r"^(PLAINTEXT|SSL|SASL_PLAINTEXT|SASL_SSL)$",
        description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.")
    kafka_sasl_mechanism: str | None = Field(
        None, pattern=r"^(PLAIN|SCRAM-SHA-256|SCRAM-SHA-512)$", description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.")
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = Field(None, description="CA bundle that signed the brokers' certificates.")
    kafka_ssl_certfile: Path | None = Field(None, description="Client certificate (mutual TLS).")
    kafka_ssl_keyfile: Path | None = Field(None, description="Client private key (mutual TLS).")

    # API (`aios api`, and `aios up`)
    api_host: str = Field("127.0.0.1", description="Address the API binds to (0.0.0.0 in containers).")
    api_port: int = Field(8000, ge=0, le=65535, description="API port; 0 lets `aios up` run without the API.")
    api_tls_certfile: Path | None = Field(None, description="Serve HTTPS with this certificate (PEM).")
    api_tls_keyfile: Path | None = Field(None, description="The private key of AIOS_API_TLS_CERTFILE (PEM).")
    api_cors_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="Origins allowed by CORS, comma-separated; empty allows none.")
    api_max_body_bytes: int = Field(1_000_000, ge=1024, description="Larger request bodies get 413.")
    api_rate_per_s: float = Field(50.0, gt=0, description="Requests per second per API key or token subject.")
    api_rate_burst: int = Field(100, ge=1, description="Requests a key may make at once before the rate applies.")
    api_jwks_url: str | None = Field(None, description="OIDC JWKS URL; set it to accept JWT bearer tokens.")
    api_jwt_issuer: str | None = Field(None, description="Required `iss` of JWT bearer tokens.")
    api_jwt_audience: str | None = Field(None, description="Required `aud` of JWT bearer tokens.")
    api_jwks_refetch_cooldown_s: float = Field(
        30.0, ge=0, description="Least time between JWKS refetches for an unknown key id (rotation).")
    api_jwt_role_claim: str = Field("aios_role", description="Claim holding the token's AIOS role.")
    api_jwt_projects_claim: str = Field("aios_projects", description="Claim listing the token's projects ('*': all).")
    api_ws_queue: int = Field(1000, ge=1, description="Events a WebSocket client may lag behind before it is closed.")

    def kafka_security(self) -> dict[str, str]:
        """librdkafka security properties (empty for PLAINTEXT), for every confluent-kafka client."""
        config: dict[str, str] = {}
        if self.kafka_security_protocol != "PLAINTEXT":
            config["security.protocol"] = self.kafka_security_protocol
        if self.kafka_sasl_mechanism:
            config["sasl.mechanism"] = self.kafka_sasl_mechanism
        if self.kafka_sasl_username:
            config["sasl.username"] = self.kafka_sasl_username
        if self.kafka_sasl_password is not None:
            config["sasl.password"] = self.kafka_sasl_password.get_secret_value()
        for key, path in (("ssl.ca.location", self.kafka_ssl_cafile),
                          ("ssl.certificate.location", self.kafka_ssl_certfile),
                          ("ssl.key.location", self.kafka_ssl_keyfile)):
            if path is not None:
                config[key] = str(path)
        return config

    @field_validator("topic_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not _TOPIC_PREFIX.match(value):
            raise ValueError(
                f"AIOS_TOPIC_PREFIX={value!r}: use 1-64 characters from A-Z a-z 0-9 . _ -"
            )
        return value

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
        scopes = ("session", "project", "agent", "task")
        for scope, amount in value.items():
            if scope not in scopes or amount < 1:
                raise ValueError(
                    f"AIOS_{str(info.field_name).upper()}: {scope}={amount} is not valid; name scopes from "
                    f"{', '.join(scopes)}, each with a value of at least 1"
                )
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

    @model_validator(mode="before")
    @classmethod
    def _pii_from_redact_pii(cls, data: Any) -> Any:
        # AIOS_LLM_REDACT_PII=0 kept PII on local models: a deployment that set it keeps that
        # behaviour under the new default, rather than starting to send masked prompts out.
        if isinstance(data, dict) and data.get("llm_pii") is None and data.get("llm_redact_pii") is not None:
            legacy = str(data["llm_redact_pii"]).strip().lower() in ("1", "true", "yes", "on")
            data = {**data, "llm_pii": "redact" if legacy else "local-only"}
        return data

    @field_validator("roles", "llm_deployments", "api_cors_origins", "llm_pii_phone_regions", mode="before")
    @classmethod
    def _split_csv(cls, value: object) -> object:
        if isinstance(value, str):
            value = tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("roles")
    @classmethod
    def _check_roles(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from agents.roles import load_roles

        if not value:
            raise ValueError("AIOS_ROLES is empty: name at least one role, e.g. AIOS_ROLES=general")
        registry = load_roles()
        for role in value:
            if not _ROLE.match(role):
                raise ValueError(
                    f"AIOS_ROLES: {role!r} is not a valid role name "
                    "(lowercase letter first, then a-z 0-9 _ -, at most 40 characters)"
                )
            if role not in registry:
                raise ValueError(
                    f"AIOS_ROLES: unknown role {role!r}; known roles: {', '.join(registry.names())} "
                    "(add one to agents/roles.json)"
                )
        return value

    @property
    def kafka_port(self) -> int:
        """Port of the first bootstrap server (the local broker's listener)."""
        first = self.kafka_bootstrap.split(",")[0]
        return int(first.rsplit(":", 1)[1])

    @property
    def redis_port(self) -> int:
        from urllib.parse import urlparse

        return urlparse(self.redis_url).port or 6379


def load_settings(**overrides: object) -> Settings:
    """Read the environment once; explicit overrides win (used by tests and benches)."""
    from pydantic import ValidationError

    from schemas.errors import ConfigError

    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = [f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}" for err in exc.errors()]
        raise ConfigError("invalid AIOS settings:\n  " + "\n  ".join(lines)) from exc
