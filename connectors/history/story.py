"""The story of one trace (or task) from the history, for ``aios trace``: every stored event in
order, with the process that produced it, its partition and offset, what each LLM and tool call
used, and the time between hops; arranged as a tree of attempts. No tracing backend is needed:
every event is in ClickHouse, and ``hops`` keeps each record's producing process (migration 8)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from aios.connectors.history.base import HistoryStore
from aios.connectors.history.migrations import DATABASE
from aios.connectors.history.sql import quote

MAX_EVENTS = 5_000  # a story longer than this is cut (and says so)
MAX_TRACES = 20  # trace ids one task id may resolve to


@dataclass
class Hop:
    """One stored event of the story."""

    ts_ms: int
    event_type: str
    topic: str
    partition: int
    offset: int
    event_id: str
    trace_id: str
    task_id: str
    project_id: str
    role: str
    status: str
    producer: str = ""  # the process that produced the record (its aios-process header)
    traceparent: str = ""
    gap_ms: int = 0  # since the previous hop of the story
    attempt: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)  # LLM call usage, tool name, error, ...

    def label(self) -> str:
        """A short name for the hop: ``Assignment``, ``TaskResult succeeded``, ``chat gpt-4o-mini``."""
        d = self.detail
        if self.event_type == "LlmCall":
            return f"chat {d.get('model', '')}"
        if self.event_type == "AgentMessage" and d.get("tool"):
            return f"execute_tool {d['tool']}"
        return f"{self.event_type} {self.status}".strip()

    def in_attempt(self) -> bool:
        """Whether the hop is part of an attempt: its assignment, and what the agent produced for it."""
        if self.attempt is None:
            return False
        return self.event_type in ("Assignment", "LlmCall", "AgentMessage", "MemoryEvent") or (
            self.event_type == "TaskResult" and self.topic.endswith(".attempts"))


@dataclass
class Attempt:
    number: int
    hops: list[Hop] = field(default_factory=list)

    @property
    def duration_ms(self) -> int:
        return self.hops[-1].ts_ms - self.hops[0].ts_ms if self.hops else 0


@dataclass
class Story:
    """A trace's hops in order: those outside any attempt (submit, results, status), and each attempt's."""

    query: str
    trace_ids: list[str]
    hops: list[Hop]
    truncated: bool = False

    @property
    def duration_ms(self) -> int:
        return self.hops[-1].ts_ms - self.hops[0].ts_ms if self.hops else 0

    def attempts(self) -> list[Attempt]:
        by_number: dict[int, Attempt] = {}
        for hop in self.hops:
            if hop.in_attempt() and hop.attempt is not None:
                by_number.setdefault(hop.attempt, Attempt(hop.attempt)).hops.append(hop)
        return [by_number[n] for n in sorted(by_number)]

    def tree(self) -> list[tuple[Hop | Attempt, list[Hop]]]:
        """The top level in time order: hops outside attempts, and each attempt (with its hops)."""
        items: list[tuple[Hop | Attempt, list[Hop]]] = []
        seen: set[int] = set()
        attempts = {a.number: a for a in self.attempts()}
        for hop in self.hops:
            if hop.in_attempt() and hop.attempt is not None:
                if hop.attempt not in seen:
                    seen.add(hop.attempt)
                    items.append((attempts[hop.attempt], attempts[hop.attempt].hops))
                continue
            items.append((hop, []))
        return items

    def to_dict(self) -> dict[str, Any]:
        return {"query": self.query, "trace_ids": self.trace_ids, "duration_ms": self.duration_ms,
                "truncated": self.truncated, "events": [asdict(h) for h in self.hops],
                "attempts": [{"attempt": a.number, "duration_ms": a.duration_ms, "events": len(a.hops)}
                             for a in self.attempts()]}


def resolve(store: HistoryStore, trace_or_task: str) -> list[str]:
    """The trace ids ``trace_or_task`` names: itself when it is one, else those of the task's events."""
    q = quote(trace_or_task)
    rows = store.query(f"SELECT DISTINCT trace_id FROM {DATABASE}.events "  # noqa: S608 - quoted
                       f"WHERE trace_id = {q} OR task_id = {q} LIMIT {MAX_TRACES}")
    return sorted(str(r["trace_id"]) for r in rows)


def story(store: HistoryStore, trace_or_task: str) -> Story:
    """The whole stored story of a trace id, or of a task id (its events, and its trace's submit)."""
    traces = resolve(store, trace_or_task)
    if not traces:
        return Story(trace_or_task, [], [])
    in_traces = ", ".join(quote(t) for t in traces)
    by_task = ""
    if trace_or_task not in traces:  # a task id: its own events, and the trace's task-less ones
        by_task = f" AND (task_id = {quote(trace_or_task)} OR task_id = '')"
    columns = "event_id, event_type, topic, partition, offset, toUnixTimestamp64Milli(ts) AS ts_ms, trace_id, " \
        "task_id, project_id, role, status"
    where = f"trace_id IN ({in_traces}){by_task}"
    sql = f"SELECT {columns} FROM {DATABASE}.events FINAL WHERE {where} " \
        f"ORDER BY ts_ms, topic, partition, offset LIMIT {MAX_EVENTS + 1}"  # noqa: S608 - quoted values
    rows = store.query(sql)
    truncated = len(rows) > MAX_EVENTS
    hops = [Hop(int(r["ts_ms"]), str(r["event_type"]), str(r["topic"]), int(r["partition"]), int(r["offset"]),
                str(r["event_id"]), str(r["trace_id"]), str(r["task_id"]), str(r["project_id"]), str(r["role"]),
                str(r["status"])) for r in rows[:MAX_EVENTS]]
    _add_hops(store, hops)
    _add_details(store, hops)
    previous = hops[0].ts_ms if hops else 0
    for hop in hops:
        hop.gap_ms, previous = hop.ts_ms - previous, hop.ts_ms
    return Story(trace_or_task, traces, hops, truncated)


def _add_hops(store: HistoryStore, hops: list[Hop]) -> None:
    if not hops:
        return
    where = ", ".join(f"({quote(h.topic)}, {h.partition}, {h.offset})" for h in hops)
    rows = store.query(f"SELECT topic, partition, offset, producer, traceparent FROM {DATABASE}.hops FINAL "  # noqa: S608
                       f"WHERE (topic, partition, offset) IN ({where})")
    found = {(str(r["topic"]), int(r["partition"]), int(r["offset"])): r for r in rows}
    for hop in hops:
        row = found.get((hop.topic, hop.partition, hop.offset))
        if row is not None:
            hop.producer, hop.traceparent = str(row["producer"]), str(row["traceparent"])


def _by_event(store: HistoryStore, table: str, columns: str, hops: list[Hop], event_type: str) -> dict[str, dict[str, Any]]:
    ids = [quote(h.event_id) for h in hops if h.event_type == event_type]
    if not ids:
        return {}
    rows = store.query(f"SELECT event_id, {columns} FROM {DATABASE}.{table} FINAL "  # noqa: S608 - our names, quoted ids
                       f"WHERE event_id IN ({', '.join(ids)})")
    return {str(r.pop("event_id")): r for r in rows}


def _add_details(store: HistoryStore, hops: list[Hop]) -> None:
    """What each hop's typed row adds: usage of an LLM call, the tool of a tool call, attempts, errors."""
    calls = _by_event(store, "llm_calls", "attempt, step, agent_id, provider, model, strategy, input_tokens, "
                      "output_tokens, cost_usd, latency_ms, ttft_ms, outcome, fallback_chain", hops, "LlmCall")
    tools = _by_event(store, "messages", "sender, kind, JSONExtractString(content, 'tool') AS tool, "
                      "JSONExtractInt(content, 'step') AS step, length(content) AS chars", hops, "AgentMessage")
    results = _by_event(store, "results", "attempt, agent_id, provider, model, input_tokens, output_tokens, "
                        "cost_usd, latency_ms, error_type, error", hops, "TaskResult")
    assignments = _by_event(store, "assignments", "attempt", hops, "Assignment")
    memory = _by_event(store, "memory", "kind, scope, tokens", hops, "MemoryEvent")
    for hop in hops:
        detail = (calls.get(hop.event_id) or tools.get(hop.event_id) or results.get(hop.event_id)
                  or assignments.get(hop.event_id) or memory.get(hop.event_id) or {})
        hop.detail = {k: _plain(v) for k, v in detail.items() if v not in (None, "")}
        attempt = hop.detail.get("attempt")
        hop.attempt = int(attempt) if attempt is not None else None
    _attempts_of_tools(hops)


def _attempts_of_tools(hops: list[Hop]) -> None:
    # A tool message names no attempt: it belongs to the latest one assigned before it.
    current: int | None = None
    for hop in hops:
        if hop.event_type == "Assignment":
            current = hop.attempt
        elif hop.attempt is None and hop.event_type in ("AgentMessage", "MemoryEvent"):
            hop.attempt = current


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, tuple):
        return list(value)
    return value
