"""The queries behind ``aios stats``: throughput, latency, success, cost, failures and load per role.

They read the typed tables with FINAL, so an event delivered twice (a replay, a sink retry) is
counted once: replaying a topic leaves the answers unchanged.

A result is a TaskResult on the results topic: the one the results committer made final. The
``results`` table also holds each attempt's TaskResult (the attempts topic: pickups, failed tries,
the agent's answer before the orchestrator accepts it), which are other events of the same task;
its ``topic`` column tells them apart (migration 13).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from aios.connectors.history.base import HistoryStore
from aios.connectors.history.migrations import COMMITTED_RESULT, DATABASE, RESULT_LATENCY_MS
from aios.connectors.history.sql import quote


@dataclass(frozen=True)
class Window:
    """The rows ``aios stats`` looks at: the last ``since_s`` seconds, optionally one project."""

    since_s: int
    project_id: str | None = None

    def where(self, *, project: bool = True) -> str:
        clause = f"ts >= now64(3) - toIntervalSecond({int(self.since_s)})"
        if project and self.project_id is not None:
            clause += f" AND project_id = {quote(self.project_id)}"
        return clause


@dataclass
class Stats:
    since_s: int
    project_id: str | None
    submitted: int = 0
    results: int = 0
    succeeded: int = 0
    failed: int = 0
    tasks_per_min: float = 0.0
    success_rate: float | None = None
    latency_ms: dict[str, float | None] = field(default_factory=dict)
    cost: list[dict[str, Any]] = field(default_factory=list)
    top_failures: list[dict[str, Any]] = field(default_factory=list)
    roles: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _one(store: HistoryStore, sql: str) -> dict[str, Any]:
    rows = store.query(sql)
    return rows[0] if rows else {}


def _float(value: Any) -> float | None:
    if value is None:  # chdb gives NULL quantiles over an empty window (a server gives NaN)
        return None
    number = float(value)
    return None if number != number else round(number, 2)  # NaN: no rows in the window


def results(store: HistoryStore, w: Window, stats: Stats) -> dict[str, dict[str, Any]]:
    """Fill the summary from one pass over ``results``; return the per-role rows of that pass.

    GROUP BY ROLLUP builds the all-roles row by merging the per-role states, so the table is
    read (with FINAL) once rather than once for the summary and again for the roles. Attempts (a
    pickup, a failed try that was retried) are not results.
    """
    by_role: dict[str, dict[str, Any]] = {}
    total: dict[str, Any] = {}
    for row in store.query(f"""SELECT grouping(role) AS all_roles, role, count() AS n,
        countIf(status = 'succeeded') AS succeeded, countIf(status = 'failed') AS failed,
        quantilesTDigest(0.5, 0.95, 0.99)({RESULT_LATENCY_MS}) AS q
        FROM {DATABASE}.results FINAL WHERE {w.where()} AND {COMMITTED_RESULT}
        GROUP BY ROLLUP(role)"""):  # noqa: S608 - quoted by Window
        if int(row["all_roles"]):
            total = row
        else:
            by_role[str(row["role"])] = row
    stats.results = int(total.get("n", 0))
    stats.succeeded = int(total.get("succeeded", 0))
    stats.failed = int(total.get("failed", 0))
    q = total.get("q") or [float("nan")] * 3
    stats.latency_ms = {"p50": _float(q[0]), "p95": _float(q[1]), "p99": _float(q[2])}
    stats.tasks_per_min = round(stats.results / (w.since_s / 60), 2)
    stats.success_rate = round(stats.succeeded / stats.results, 4) if stats.results else None
    row = _one(store, f"SELECT count() AS n FROM {DATABASE}.tasks FINAL WHERE {w.where()}")  # noqa: S608
    stats.submitted = int(row.get("n", 0))
    return by_role


def cost(store: HistoryStore, w: Window, limit: int = 20) -> list[dict[str, Any]]:
    rows = store.query(f"""SELECT provider, model, count() AS calls, sum(input_tokens) AS input_tokens,
        sum(output_tokens) AS output_tokens, sum(cost_usd) AS cost_usd
        FROM {DATABASE}.llm_calls FINAL WHERE {w.where()}
        GROUP BY provider, model ORDER BY cost_usd DESC, calls DESC LIMIT {int(limit)}""")  # noqa: S608
    return [{"provider": r["provider"], "model": r["model"], "calls": int(r["calls"]),
             "input_tokens": int(r["input_tokens"]), "output_tokens": int(r["output_tokens"]),
             "cost_usd": round(float(r["cost_usd"]), 6)} for r in rows]


def top_failures(store: HistoryStore, w: Window, limit: int = 10) -> list[dict[str, Any]]:
    """Failed results grouped by their error text (the first 200 characters)."""
    rows = store.query(f"""SELECT left(error, 200) AS error, count() AS n, any(role) AS role
        FROM {DATABASE}.results FINAL WHERE {w.where()} AND {COMMITTED_RESULT} AND status = 'failed'
        GROUP BY error ORDER BY n DESC, error LIMIT {int(limit)}""")  # noqa: S608
    return [{"error": r["error"], "count": int(r["n"]), "role": r["role"]} for r in rows]


def roles(store: HistoryStore, w: Window, done: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per role: tasks assigned, results, failures and median latency in the window.

    ``done`` holds the per-role rows of ``results()``.
    """
    assigned = {str(r["role"]): int(r["n"]) for r in store.query(
        f"SELECT role, count() AS n FROM {DATABASE}.assignments FINAL WHERE {w.where()} GROUP BY role")}  # noqa: S608
    out = []
    for role in sorted(set(assigned) | set(done)):
        r = done.get(role, {})
        out.append({"role": role, "assigned": assigned.get(role, 0), "results": int(r.get("n", 0)),
                    "failed": int(r.get("failed", 0)),
                    "p50_ms": _float(r["q"][0]) if r.get("q") else None})
    return out


def dead_letters(store: HistoryStore, w: Window) -> int:
    # Dead letters carry no project (the record could not be read); counted only without --project.
    if w.project_id is not None:
        return 0
    row = _one(store, f"SELECT count() AS n FROM {DATABASE}.dead_letters FINAL WHERE {w.where(project=False)}")  # noqa: S608
    return int(row.get("n", 0))


def stats(store: HistoryStore, *, since_s: int, project_id: str | None = None) -> Stats:
    """Everything ``aios stats`` prints, over the last ``since_s`` seconds."""
    w = Window(since_s, project_id)
    out = Stats(since_s=since_s, project_id=project_id)
    done = results(store, w, out)
    out.cost = cost(store, w)
    out.top_failures = top_failures(store, w)
    out.roles = roles(store, w, done)
    out.dead_letters = dead_letters(store, w)
    return out
