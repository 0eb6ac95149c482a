"""Versioned ClickHouse DDL: numbered migrations, applied once each, the same SQL on chdb and a server.

A migration is frozen once released: change the schema by appending a new one. Applied versions
are recorded in ``aios.aios_schema_migrations``; every statement is idempotent (IF NOT EXISTS), so
a migration interrupted half-way is simply re-run.

Typed tables take each event's JSON as it is on the wire: ``timestamp`` (epoch ms) is an
EPHEMERAL input column that fills ``ts``; other timestamp-millis fields stay Int64 epoch ms.
They are ReplacingMergeTree, so a redelivered event (same sort key, which ends in event_id)
collapses to one row; queries that must be exact read them with FINAL.

Since v4 every field of a typed event is a column of its typed table, and ``events.payload``
holds the JSON only of record types without one (plans, statuses, control): storing each event
once made the sink ~25% faster at large batches (docs/benchmarks.md). Rows stored before v4 keep
their payload.

The per-minute rollups are materialised views over the typed tables. Counts are
``uniqExactState(event_id)``, so they stay exact when events are redelivered; token and cost
sums count each insert, so a replay inflates them (``aios stats`` reads the deduplicated base
tables for that reason).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DATABASE = "aios"
MIGRATIONS_TABLE = f"{DATABASE}.aios_schema_migrations"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


@dataclass
class MigrationReport:
    applied: list[int] = field(default_factory=list)
    already_applied: list[int] = field(default_factory=list)


def _ttl(ttl_days: int, column: str = "ts") -> str:
    return f"TTL toDateTime({column}) + INTERVAL {int(ttl_days)} DAY"


def _typed(table: str, columns: str, order_by: str, ttl_days: int) -> str:
    return f"""CREATE TABLE IF NOT EXISTS {DATABASE}.{table} (
        event_id String,
        timestamp Int64 EPHEMERAL,
        ts DateTime64(3, 'UTC') DEFAULT fromUnixTimestamp64Milli(timestamp, 'UTC'),
        trace_id String,
        {columns}
    ) ENGINE = ReplacingMergeTree
    PARTITION BY toYYYYMM(ts)
    ORDER BY ({order_by})
    {_ttl(ttl_days)}"""


def _v1_events() -> tuple[str, ...]:
    # The schema before migrations existed, unchanged, so existing data directories adopt it.
    return (
        f"CREATE DATABASE IF NOT EXISTS {DATABASE}",
        f"""CREATE TABLE IF NOT EXISTS {DATABASE}.events (
        event_id String,
        event_type LowCardinality(String),
        topic LowCardinality(String),
        partition UInt32,
        offset UInt64,
        ts DateTime64(3, 'UTC'),
        trace_id String,
        task_id String,
        project_id String,
        role LowCardinality(String),
        status LowCardinality(String),
        payload String
    ) ENGINE = ReplacingMergeTree
    PARTITION BY toYYYYMM(ts)
    ORDER BY (event_type, event_id)""",
    )


def _v2_typed_tables(ttl_days: int) -> tuple[str, ...]:
    return (
        f"ALTER TABLE {DATABASE}.events MODIFY {_ttl(ttl_days)}",
        _typed("tasks", """task_id String, project_id String, role LowCardinality(String), description String,
        priority Int32, depends_on Array(String), privacy LowCardinality(String), submitted_by String,
        metadata Map(String, String)""", "project_id, ts, event_id", ttl_days),
        _typed("assignments", """task_id String, project_id String, role LowCardinality(String),
        description String, attempt Int32, priority Int32, privacy LowCardinality(String),
        context Map(String, String), submitted_at Int64""", "project_id, ts, event_id", ttl_days),
        _typed("results", """task_id String, project_id String, role LowCardinality(String), attempt Int32,
        status LowCardinality(String), output String, error String, agent_id String,
        provider LowCardinality(String), model LowCardinality(String), input_tokens UInt32,
        output_tokens UInt32, cost_usd Float64, latency_ms Float64, submitted_at Int64""",
               "project_id, ts, event_id", ttl_days),
        _typed("messages", """message_id String, task_id String, project_id String, sender String,
        recipient String, kind LowCardinality(String), content String""", "project_id, ts, event_id", ttl_days),
        _typed("memory", """memory_id String, scope LowCardinality(String), scope_id String, project_id String,
        kind LowCardinality(String), speaker String, content String, task_id String, tokens UInt32""",
               "project_id, scope, scope_id, ts, event_id", ttl_days),
        _typed("llm_calls", """call_id String, task_id String, project_id String, agent_id String,
        attempt Int32, step Int32, provider LowCardinality(String), model LowCardinality(String),
        strategy LowCardinality(String), input_tokens UInt32, output_tokens UInt32, cost_usd Float64,
        latency_ms Float64, ttft_ms Nullable(Float64), outcome LowCardinality(String), error String,
        fallback_chain Array(String)""", "project_id, ts, event_id", ttl_days),
        _typed("agent_status", """agent_id String, role LowCardinality(String), state LowCardinality(String),
        in_flight Array(String), version String, host String, heartbeat_interval_ms Int32""",
               "agent_id, ts, event_id", ttl_days),
        _typed("dead_letters", """source_topic LowCardinality(String), source_partition Int32,
        source_offset Int64, key Nullable(String), payload String, processor LowCardinality(String),
        error_type LowCardinality(String), error String, errors Array(String)""",
               "source_topic, ts, event_id", ttl_days),
    )


def _rollup(name: str, columns: str, order_by: str, ttl_days: int) -> str:
    return f"""CREATE TABLE IF NOT EXISTS {DATABASE}.{name} (
        minute DateTime('UTC'),
        {columns}
    ) ENGINE = AggregatingMergeTree
    PARTITION BY toYYYYMM(minute)
    ORDER BY ({order_by})
    {_ttl(ttl_days, 'minute')}"""


def _view(name: str, target: str, select: str) -> str:
    return f"CREATE MATERIALIZED VIEW IF NOT EXISTS {DATABASE}.{name} TO {DATABASE}.{target} AS {select}"


# Latency from submit to result: the producer's submitted_at when set, else the agent's own figure.
RESULT_LATENCY_MS = "if(submitted_at > 0, toFloat64(toUnixTimestamp64Milli(ts) - submitted_at), latency_ms)"


def _v3_rollups(ttl_days: int) -> tuple[str, ...]:
    def states(view: str, table: str, state: str) -> str:
        return _view(view, "task_states_1m", f"""SELECT toStartOfMinute(ts) AS minute, project_id, role,
            {state} AS state, uniqExactState(event_id) AS events
            FROM {DATABASE}.{table} GROUP BY minute, project_id, role, state""")

    return (
        _rollup("task_states_1m", """project_id String, role LowCardinality(String), state LowCardinality(String),
        events AggregateFunction(uniqExact, String)""", "project_id, role, state, minute", ttl_days),
        states("task_states_1m_tasks", "tasks", "'submitted'"),
        states("task_states_1m_assignments", "assignments", "'assigned'"),
        states("task_states_1m_results", "results", "toString(status)"),
        _rollup("latency_1m", """project_id String, role LowCardinality(String),
        results AggregateFunction(uniqExact, String),
        latency_ms AggregateFunction(quantiles(0.5, 0.95, 0.99), Float64)""", "project_id, role, minute", ttl_days),
        _view("latency_1m_results", "latency_1m", f"""SELECT toStartOfMinute(ts) AS minute, project_id, role,
            uniqExactState(event_id) AS results,
            quantilesState(0.5, 0.95, 0.99)({RESULT_LATENCY_MS}) AS latency_ms
            FROM {DATABASE}.results GROUP BY minute, project_id, role"""),
        _rollup("llm_usage_1m", """project_id String, provider LowCardinality(String), model LowCardinality(String),
        calls AggregateFunction(uniqExact, String), input_tokens SimpleAggregateFunction(sum, UInt64),
        output_tokens SimpleAggregateFunction(sum, UInt64), cost_usd SimpleAggregateFunction(sum, Float64)""",
                "project_id, provider, model, minute", ttl_days),
        _view("llm_usage_1m_calls", "llm_usage_1m", f"""SELECT toStartOfMinute(ts) AS minute, project_id,
            provider, model, uniqExactState(event_id) AS calls, sum(toUInt64(input_tokens)) AS input_tokens,
            sum(toUInt64(output_tokens)) AS output_tokens, sum(cost_usd) AS cost_usd
            FROM {DATABASE}.llm_calls GROUP BY minute, project_id, provider, model"""),
        _rollup("failures_1m", """project_id String, source LowCardinality(String), role LowCardinality(String),
        failures AggregateFunction(uniqExact, String)""", "project_id, source, role, minute", ttl_days),
        _view("failures_1m_results", "failures_1m", f"""SELECT toStartOfMinute(ts) AS minute, project_id,
            'result' AS source, role, uniqExactState(event_id) AS failures
            FROM {DATABASE}.results WHERE status = 'failed' GROUP BY minute, project_id, role"""),
        _view("failures_1m_dead_letters", "failures_1m", f"""SELECT toStartOfMinute(ts) AS minute,
            '' AS project_id, 'dead_letter' AS source, processor AS role, uniqExactState(event_id) AS failures
            FROM {DATABASE}.dead_letters GROUP BY minute, processor"""),
    )


def _v4_every_field_typed() -> tuple[str, ...]:
    # The fields the typed tables lacked; with them a typed row holds its whole event.
    return (
        f"ALTER TABLE {DATABASE}.assignments ADD COLUMN IF NOT EXISTS strategy LowCardinality(String) AFTER context",
        f"ALTER TABLE {DATABASE}.results ADD COLUMN IF NOT EXISTS error_type LowCardinality(String) AFTER error",
        f"ALTER TABLE {DATABASE}.results ADD COLUMN IF NOT EXISTS recall Array(String) AFTER submitted_at",
        f"ALTER TABLE {DATABASE}.agent_status ADD COLUMN IF NOT EXISTS roles Array(String) AFTER role",
        f"ALTER TABLE {DATABASE}.agent_status ADD COLUMN IF NOT EXISTS started_at Nullable(Int64) AFTER host",
        f"ALTER TABLE {DATABASE}.events COMMENT COLUMN payload "
        "'The event as JSON for record types without a typed table (since v4); typed events live in their table'",
    )


def _v5_llm_call_redacted() -> tuple[str, ...]:
    # LlmCall.redacted: whether a remote model saw the prompt with its PII masked.
    return (f"ALTER TABLE {DATABASE}.llm_calls ADD COLUMN IF NOT EXISTS redacted Bool AFTER fallback_chain",)


def _v6_llm_call_queue_ms() -> tuple[str, ...]:
    # LlmCall.queue_ms: how long the call waited for a deployment's limits before it started.
    return (f"ALTER TABLE {DATABASE}.llm_calls ADD COLUMN IF NOT EXISTS queue_ms Float64 AFTER redacted",)


def _v7_memory_privacy() -> tuple[str, ...]:
    # MemoryEvent.privacy: restricted memory (its content sealed when AIOS_ENCRYPTION_KEY is set).
    # No DEFAULT expression: the ingest plan fills only plain columns (rows from before read '').
    return (f"ALTER TABLE {DATABASE}.memory ADD COLUMN IF NOT EXISTS privacy LowCardinality(String) AFTER tokens",)


def _v8_latency_without_pickups() -> tuple[str, ...]:
    # An agent's pickup (a TaskResult of status `started` on the attempts topic) is not a result: the
    # per-minute latency rollup counted it, with the pickup's delay as its latency. Rows already
    # rolled up stay; new ones leave pickups out.
    return (
        f"DROP VIEW IF EXISTS {DATABASE}.latency_1m_results",
        _view("latency_1m_results", "latency_1m", f"""SELECT toStartOfMinute(ts) AS minute, project_id, role,
            uniqExactState(event_id) AS results,
            quantilesState(0.5, 0.95, 0.99)({RESULT_LATENCY_MS}) AS latency_ms
            FROM {DATABASE}.results WHERE status != 'started' GROUP BY minute, project_id, role"""),
    )


def _v9_hops(ttl_days: int) -> tuple[str, ...]:
    # What a record's Kafka headers say and its event does not: the process that produced it and the
    # span it was produced in (traceparent). By offset, which the sink knows without decoding.
    return (f"""CREATE TABLE IF NOT EXISTS {DATABASE}.hops (
        topic LowCardinality(String),
        partition UInt32,
        offset UInt64,
        ts DateTime64(3, 'UTC'),
        producer LowCardinality(String),
        traceparent String
    ) ENGINE = ReplacingMergeTree
    PARTITION BY toYYYYMM(ts)
    ORDER BY (topic, partition, offset)
    {_ttl(ttl_days)}""",)


def _v10_result_artifacts() -> tuple[str, ...]:
    # TaskResult.artifacts: the files an attempt produced (name, size, sha256, uri), one map each.
    return (f"ALTER TABLE {DATABASE}.results ADD COLUMN IF NOT EXISTS artifacts Array(Map(String, String)) "
            "AFTER recall",)


def _v11_assignment_acceptance() -> tuple[str, ...]:
    # Assignment.acceptance: the criterion the agent's prompt states and a sprint's review checks.
    return (f"ALTER TABLE {DATABASE}.assignments ADD COLUMN IF NOT EXISTS acceptance String AFTER submitted_at",)


def _v12_message_correlation() -> tuple[str, ...]:
    # AgentMessage.correlation_id: pairs an ask_agent question with its reply (null reads as '').
    return (f"ALTER TABLE {DATABASE}.messages ADD COLUMN IF NOT EXISTS correlation_id String AFTER content",)


# A result is a TaskResult on the results topic, the one the results committer made final; the
# attempts topic carries each attempt's TaskResults (pickups, failed tries, the agent's answer).
# Rows stored before migration 13 have no topic (''): they count as they did then (all but pickups).
COMMITTED_RESULT = "(endsWith(topic, '.results') OR (topic = '' AND status != 'started'))"


def _v13_result_topic() -> tuple[str, ...]:
    # results.topic: the topic a TaskResult came from, so a committed result is told from the
    # attempts of its task (both are TaskResults in this table; rows from before read ''). The
    # per-minute result latency and failure rollups count committed results only from now on.
    return (
        f"ALTER TABLE {DATABASE}.results ADD COLUMN IF NOT EXISTS topic LowCardinality(String) AFTER artifacts",
        f"DROP VIEW IF EXISTS {DATABASE}.latency_1m_results",
        _view("latency_1m_results", "latency_1m", f"""SELECT toStartOfMinute(ts) AS minute, project_id, role,
            uniqExactState(event_id) AS results,
            quantilesState(0.5, 0.95, 0.99)({RESULT_LATENCY_MS}) AS latency_ms
            FROM {DATABASE}.results WHERE {COMMITTED_RESULT} GROUP BY minute, project_id, role"""),
        f"DROP VIEW IF EXISTS {DATABASE}.failures_1m_results",
        _view("failures_1m_results", "failures_1m", f"""SELECT toStartOfMinute(ts) AS minute, project_id,
            'result' AS source, role, uniqExactState(event_id) AS failures
            FROM {DATABASE}.results WHERE status = 'failed' AND {COMMITTED_RESULT} GROUP BY minute, project_id, role"""),
    )


def migrations(ttl_days: int) -> list[Migration]:
    """Every migration, in order; ``ttl_days`` is the retention written into new tables."""
    if ttl_days < 1:
        raise ValueError(f"history TTL must be at least 1 day, got {ttl_days}")
    return [
        Migration(1, "events table", _v1_events()),
        Migration(2, "typed event tables", _v2_typed_tables(ttl_days)),
        Migration(3, "per-minute rollups", _v3_rollups(ttl_days)),
        Migration(4, "every field in its typed table; events.payload for untyped events only",
                  _v4_every_field_typed()),
        Migration(5, "llm_calls.redacted", _v5_llm_call_redacted()),
        Migration(6, "llm_calls.queue_ms", _v6_llm_call_queue_ms()),
        Migration(7, "memory.privacy", _v7_memory_privacy()),
        Migration(8, "latency rollup without pickups", _v8_latency_without_pickups()),
        Migration(9, "hops: each record's producing process and traceparent", _v9_hops(ttl_days)),
        Migration(10, "results.artifacts", _v10_result_artifacts()),
        Migration(11, "assignments.acceptance", _v11_assignment_acceptance()),
        Migration(12, "messages.correlation_id", _v12_message_correlation()),
        Migration(13, "results.topic: committed results apart from attempts", _v13_result_topic()),
    ]


def migrate(
    execute: Callable[[str], Any], query: Callable[[str], list[dict[str, Any]]], ttl_days: int
) -> MigrationReport:
    """Apply the migrations not yet recorded, in order; safe to run concurrently with readers."""
    execute(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
    execute(f"""CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (
        version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
    ) ENGINE = ReplacingMergeTree ORDER BY version""")
    done = {int(r["version"]) for r in query(f"SELECT version FROM {MIGRATIONS_TABLE} FINAL")}  # noqa: S608
    report = MigrationReport()
    for migration in migrations(ttl_days):
        if migration.version in done:
            report.already_applied.append(migration.version)
            continue
        for statement in migration.statements:
            execute(statement)
        name = migration.name.replace("'", "")
        execute(f"INSERT INTO {MIGRATIONS_TABLE} (version, name) VALUES ({migration.version}, '{name}')")  # noqa: S608
        report.applied.append(migration.version)
    return report
