"""Synthetic history for benchmarks: typed rows spread over the last hour, made by ClickHouse itself
(``INSERT … SELECT FROM numbers()``), so filling a million rows per table takes seconds."""

from __future__ import annotations

from aios.connectors.history.base import HistoryStore
from aios.connectors.history.migrations import DATABASE

# 5 projects, 4 roles, 3 models; every 20th result failed.
_FILL = {
    "tasks": """(event_id, timestamp, trace_id, task_id, project_id, role, description, submitted_by)
        SELECT concat('t', toString(number)), toUnixTimestamp64Milli(now64(3)) - (number % 3600000),
        toString(number), toString(number), concat('p', toString(number % 5)),
        ['general', 'backend', 'frontend', 'research'][number % 4 + 1], 'synthetic task', 'bench'""",
    "assignments": """(event_id, timestamp, trace_id, task_id, project_id, role, description, attempt, submitted_at)
        SELECT concat('a', toString(number)), toUnixTimestamp64Milli(now64(3)) - (number % 3600000) + 5,
        toString(number), toString(number), concat('p', toString(number % 5)),
        ['general', 'backend', 'frontend', 'research'][number % 4 + 1], 'synthetic task', 1,
        toUnixTimestamp64Milli(now64(3)) - (number % 3600000)""",
    "results": """(event_id, timestamp, trace_id, task_id, project_id, role, attempt, status, error, agent_id,
        provider, model, input_tokens, output_tokens, cost_usd, latency_ms, submitted_at, topic)
        SELECT concat('r', toString(number)), toUnixTimestamp64Milli(now64(3)) - (number % 3600000) + 20 +
        number % 500, toString(number), toString(number), concat('p', toString(number % 5)),
        ['general', 'backend', 'frontend', 'research'][number % 4 + 1], 1,
        if(number % 20 = 0, 'failed', 'succeeded'),
        if(number % 20 = 0, concat('provider error ', toString(number % 7)), ''), 'agent-1',
        ['openai', 'anthropic', 'local'][number % 3 + 1], ['gpt-4o-mini', 'claude-haiku', 'llama'][number % 3 + 1],
        100 + number % 50, 20 + number % 30, 0.0001 * (number % 7), 15 + number % 480,
        toUnixTimestamp64Milli(now64(3)) - (number % 3600000), 'bench.results'""",
    "llm_calls": """(event_id, timestamp, trace_id, call_id, task_id, project_id, agent_id, attempt, step,
        provider, model, strategy, input_tokens, output_tokens, cost_usd, latency_ms, outcome)
        SELECT concat('c', toString(number)), toUnixTimestamp64Milli(now64(3)) - (number % 3600000) + 15,
        toString(number), toString(number), toString(number), concat('p', toString(number % 5)), 'agent-1',
        1, 0, ['openai', 'anthropic', 'local'][number % 3 + 1],
        ['gpt-4o-mini', 'claude-haiku', 'llama'][number % 3 + 1], 'single', 100 + number % 50,
        20 + number % 30, 0.0001 * (number % 7), 10 + number % 400, 'ok'""",
}



SYNTHETIC_TABLES = tuple(_FILL)


def fill_synthetic(store: HistoryStore, rows: int) -> None:
    """``rows`` synthetic rows in each of :data:`SYNTHETIC_TABLES` (the rollups fill from them)."""
    for table, select in _FILL.items():
        columns, body = select.split("SELECT", 1)
        store.execute(f"INSERT INTO {DATABASE}.{table} {columns} SELECT {body} FROM numbers({int(rows)})")  # noqa: S608 - constants
