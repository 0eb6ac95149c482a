"""One project's orchestration state: the DAG plus attempts, retries, budget and timing.

The orchestrator processor keeps one of these per project in memory, turns each incoming event
into :class:`Actions`, and logs the entries an event changed (``changes``, see entries.py); a
restarted orchestrator rebuilds the same state from those entries and carries on where it was.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aios.schemas.limits import MAX_REASON_CHARS, STATUS_MAX_PATH, STATUS_MAX_TASKS, cut
from aios.streams.orchestration.dag import TERMINAL, Limits, Node, ProjectDag, State, node_of
from aios.streams.orchestration.goal import GOAL_TASK
from aios.streams.orchestration.plan import Milestone, Plan, PlannedTask
from aios.streams.orchestration.sprints import (
    AWAITING_APPROVAL,
    REPLAN,
    REVIEW,
    PlanChange,
    Sprints,
    milestone_of,
)

# Failures that another attempt cannot fix: the request or the configuration is wrong.
PERMANENT_ERRORS = frozenset({
    "ProviderAuthError", "BadRequestError", "ContextTooLongError", "UnknownModelError",
    "NoDeploymentError", "BudgetExceededError", "MissingCredentialsError",
    # A role's output contract broken twice in one attempt (agents.runner.INVALID_OUTPUT).
    "invalid_output",
    # An answer too large for a result (agents.runner.OUTPUT_TOO_LARGE): another would be as long.
    "output_too_large",
})


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    base_ms: int = 500
    max_ms: int = 30_000
    jitter: float = 0.2  # ± fraction of the delay, so retries of many tasks do not align

    def delay_ms(self, attempt: int, rng: random.Random) -> int:
        """Exponential backoff after failed attempt number ``attempt`` (1-based), with jitter."""
        base = min(self.base_ms * 2 ** (attempt - 1), self.max_ms)
        return max(0, int(base * (1 + rng.uniform(-self.jitter, self.jitter))))


@dataclass
class Dispatch:
    task_id: str
    role: str
    description: str
    attempt: int
    priority: int
    context: dict[str, str]
    privacy: str = "normal"
    acceptance: str = ""


@dataclass
class Final:
    """A task's one terminal result, published by the orchestrator to the results topic."""

    task_id: str
    role: str
    status: str  # succeeded | failed | skipped | cancelled
    attempt: int
    output: str = ""
    error: str | None = None


@dataclass
class Actions:
    dispatch: list[Dispatch] = field(default_factory=list)
    finals: list[Final] = field(default_factory=list)
    dead_letters: list[tuple[str, list[str]]] = field(default_factory=list)  # task id, every error
    retry_at_ms: list[int] = field(default_factory=list)  # when a retry falls due

    def __bool__(self) -> bool:
        return bool(self.dispatch or self.finals or self.dead_letters or self.retry_at_ms)


_NOT_NODE = frozenset({"state", "depends_on", "errors", "submitted_at", "standalone"})
_SPRINT_STATUS = ("estimate_tokens", "estimate_seconds", "estimate_usd", "tokens", "seconds", "cost_usd")


class ProjectState:
    def __init__(self, dag: ProjectDag, *, started_ms: int, budget_usd: float | None = None) -> None:
        self.dag = dag
        self.started_ms = started_ms
        self.budget_usd = budget_usd
        self.cost_usd = 0.0
        self.cancelled = False
        self.submitted_at: dict[str, int] = {}  # task id -> submit time (ms), for latency
        # Standalone tasks (`aios submit` without a plan) that finished and that nothing depends
        # on leave the state; only their count stays. A long-lived project such as "default"
        # would otherwise grow without bound, and every event rewrites the whole state.
        self.archived: dict[str, int] = {}
        self.standalone: set[str] = set()
        self.goal = False  # started from a goal: the planner task's answer extends the DAG
        self.removed: set[str] = set()  # archived since the last ``changes()``: their entries go
        self.finished_ms: int | None = None  # when every task had ended (set by the orchestrator)
        self.sprints = Sprints()  # the plan's milestones, run one at a time (sprints.py)

    # --- construction and serialisation ----------------------------------------------------

    @classmethod
    def from_plan(cls, plan: Plan, *, now_ms: int) -> ProjectState:
        state = cls(ProjectDag(plan), started_ms=now_ms, budget_usd=plan.budget_usd)
        state.sprints = Sprints.of(plan.milestones)
        state.submitted_at = dict.fromkeys((t.id for t in plan.tasks), now_ms)
        return state

    @classmethod
    def empty(cls, project: str, *, now_ms: int) -> ProjectState:
        """A project that standalone tasks join one by one."""
        return cls(ProjectDag.empty(project), started_ms=now_ms)

    # The state is stored as entries: one for the project, one per task. The orchestrator writes
    # only the entries an event changed (``changes``); a restart rebuilds from all of them.

    def meta(self) -> dict[str, Any]:
        return {"project": self.dag.project, "started_ms": self.started_ms, "budget_usd": self.budget_usd,
                "cost_usd": self.cost_usd, "cancelled": self.cancelled, "archived": self.archived,
                "goal": self.goal, "finished_ms": self.finished_ms, "open_sprint": self.dag.open_sprint,
                **self.sprints.to_meta()}

    def node_entry(self, task_id: str) -> dict[str, Any]:
        n = self.dag.nodes[task_id]
        # vars() rather than dataclasses.asdict: asdict deep-copies field by field.
        return {**vars(n), "state": n.state.value, "errors": list(n.errors),
                "submitted_at": self.submitted_at.get(task_id), "standalone": task_id in self.standalone}

    def changes(self) -> tuple[dict[str, Any], dict[str, dict[str, Any] | None]]:
        """The project entry and the task entries changed since the last call (None: removed)."""
        touched, self.dag.touched = self.dag.touched, set()
        nodes: dict[str, dict[str, Any] | None] = dict.fromkeys(self.removed)
        self.removed = set()
        for tid in touched:
            if tid in self.dag.nodes:
                nodes[tid] = self.node_entry(tid)
        return self.meta(), nodes

    @classmethod
    def from_entries(cls, meta: dict[str, Any], nodes: list[dict[str, Any]]) -> ProjectState:
        """Rebuild from a project entry and its task entries (in any order)."""
        dag = ProjectDag.empty(meta["project"])
        parsed = [Node(**{k: v for k, v in raw.items() if k not in _NOT_NODE},
                       state=State(raw["state"]), depends_on=tuple(raw["depends_on"]), errors=list(raw["errors"]))
                  for raw in nodes]
        for node in parsed:  # with ready=False, add() needs no dependency to be there yet
            dag.add(node, ready=False)
        dag.touched = set()
        state = cls(dag, started_ms=meta["started_ms"], budget_usd=meta["budget_usd"])
        state.cost_usd, state.cancelled = meta["cost_usd"], meta["cancelled"]
        state.archived = dict(meta["archived"])
        state.goal = bool(meta["goal"])
        state.finished_ms = meta.get("finished_ms")
        state.sprints = Sprints.from_meta(meta)  # entries from before sprints have none
        dag.open_sprint = int(meta.get("open_sprint", 0))
        for raw in nodes:
            if raw["submitted_at"] is not None:
                state.submitted_at[raw["id"]] = raw["submitted_at"]
            if raw["standalone"]:
                state.standalone.add(raw["id"])
        return state

    def to_dict(self) -> dict[str, Any]:
        """Every entry at once (tests and tools; the orchestrator writes ``changes``)."""
        return {"meta": self.meta(), "nodes": [self.node_entry(t) for t in self.dag.nodes]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProjectState:
        return cls.from_entries(data["meta"], data["nodes"])

    def archive_finished_standalone(self) -> None:
        """Drop finished standalone tasks nobody depends on, keeping their counts."""
        # Only tasks changed since the state was last logged can have just finished: scanning
        # every standalone task per event was quadratic under a backlog of them.
        for tid in list(self.standalone & self.dag.touched):
            node = self.dag.nodes.get(tid)
            if node is None or node.state not in TERMINAL or self.dag.dependents.get(tid):
                continue
            self._archive(tid)

    def archive_all(self) -> None:
        """A project finished long ago keeps only its counts (tasks, outputs and reasons go)."""
        for tid in list(self.dag.nodes):
            self._archive(tid)

    def _archive(self, tid: str) -> None:
        node = self.dag.remove(tid)
        self.removed.add(tid)
        self.standalone.discard(tid)
        self.submitted_at.pop(tid, None)
        self.archived[node.state.value] = self.archived.get(node.state.value, 0) + 1

    # --- events ----------------------------------------------------------------------------

    def add_task(self, task: PlannedTask, *, submitted_ms: int) -> Actions:
        """A standalone task joins its project's DAG (its dependencies must already be there)."""
        if task.id in self.dag.nodes:
            return Actions()  # a redelivered submission
        missing = [d for d in task.depends_on if d not in self.dag.nodes]
        node = Node(task.id, task.role, task.priority, tuple(d for d in task.depends_on if d in self.dag.nodes),
                    task.requires_approval, description=task.description, acceptance=task.acceptance,
                    privacy=task.privacy)
        self.submitted_at[task.id] = submitted_ms
        self.standalone.add(task.id)
        self.dag.add(node)
        if missing:
            self.dag.set_state(node, State.FAILED)
            node.reason = f"depends on unknown task(s) {', '.join(missing)}"
            return Actions(finals=[Final(task.id, task.role, "failed", 0, error=node.reason)])
        if node.state is State.SKIPPED:
            return Actions(finals=[Final(task.id, task.role, "skipped", 0, error=node.reason)])
        return Actions()

    def extend(self, tasks: Sequence[PlannedTask], *, now_ms: int, milestones: Sequence[Milestone] = ()) -> None:
        """Add planned tasks (in dependency order, their dependencies already in the DAG), and the
        milestones they name (a goal's plan in sprints)."""
        self.sprints.add_milestones(milestones)
        for t in tasks:
            if t.id in self.dag.nodes:
                continue  # a replayed expansion
            self.submitted_at[t.id] = now_ms
            self.dag.add(node_of(t, self.sprints.number(t.milestone)))

    def advance_sprints(self, *, now_ms: int, roles: set[str], approve_every: bool = False) -> None:
        """Open, review and re-plan sprints as far as the tasks' states allow (sprints.py); with
        ``approve_every`` each sprint after the first waits for an approval."""
        spent = "" if self.budget_usd is None else f" (${self.cost_usd:.4f} spent)"
        budget = ("There is no budget." if self.budget_usd is None else
                  f"The budget is ${self.budget_usd:.4f}{spent}: keep the remaining estimates within it.")
        for node in self.sprints.advance(self.dag, now_ms=now_ms, roles=roles,
                                         halted=self.cancelled or self.budget_spent, budget_line=budget,
                                         approve_every=approve_every):
            self.submitted_at[node.id] = now_ms

    def plan_change(self, task_id: str, output: str, roles: set[str], attempt: int | None = None) -> PlanChange | None:
        """A re-plan step's answer as a validated change (PlanError if invalid); None for other
        tasks, and for an attempt that is not the current one (stale: it changes nothing)."""
        node = self.dag.nodes.get(task_id)
        if node is None or node.kind != REPLAN or node.state is not State.DISPATCHED:
            return None
        if attempt is not None and attempt != node.attempts:
            return None
        # In a goal's project every planned task reads the plan; so do the tasks a re-plan adds.
        carry = (GOAL_TASK,) if self.goal and GOAL_TASK in self.dag.nodes else ()
        return self.sprints.plan_change(self.dag, node, output, roles, budget_usd=self.budget_usd,
                                        cost_usd=self.cost_usd, carry=carry)

    def apply_change(self, task_id: str, change: PlanChange, *, now_ms: int) -> None:
        """Apply a re-plan that has just succeeded."""
        gone, joined = self.sprints.apply(self.dag, self.dag.nodes[task_id], change)
        for tid in gone:
            self.removed.add(tid)
            self.submitted_at.pop(tid, None)
        for node in joined:
            self.submitted_at[node.id] = now_ms

    def fail_task(self, task: PlannedTask, reason: str, *, submitted_ms: int) -> Actions:
        """A task that can never run (e.g. its role does not exist here) fails visibly at once."""
        if task.id in self.dag.nodes:
            return Actions()
        self.submitted_at[task.id] = submitted_ms
        self.standalone.add(task.id)
        self.dag.add(Node(task.id, task.role, task.priority, (), description=task.description,
                          state=State.FAILED, reason=reason), ready=False)
        return Actions(finals=[Final(task.id, task.role, "failed", 0, error=reason)])

    def on_attempt(self, task_id: str, attempt: int, ok: bool, output: str, error: str | None,
                   cost_usd: float, *, now_ms: int, policy: RetryPolicy, rng: random.Random,
                   retryable: bool = True, output_ref: str = "", tokens: int = 0, seconds: float = 0.0) -> Actions:
        """An attempt's outcome from an agent. Stale or duplicate attempts change nothing.
        ``output_ref`` says where the whole output can be read again (dependents get excerpts);
        ``tokens`` and ``seconds`` add to the task's actuals."""
        node = self.dag.nodes.get(task_id)
        if node is None or node.state is not State.DISPATCHED or attempt != node.attempts:
            return Actions()
        self.cost_usd += cost_usd
        node.cost_usd += cost_usd
        node.tokens += tokens
        node.seconds += seconds
        if ok:
            self.dag.succeeded(task_id, output, output_ref)
            if node.kind == REVIEW:
                self.sprints.on_review(self.dag, node, output)
            return Actions(finals=[Final(task_id, node.role, "succeeded", attempt, output=output)])
        reason = error or "failed without an error message"
        if retryable and attempt < policy.max_attempts and not self.cancelled:
            due = now_ms + policy.delay_ms(attempt, rng)
            self.dag.retry_later(task_id, f"attempt {attempt}: {reason}", due)
            return Actions(retry_at_ms=[due])
        node.errors.append(f"attempt {attempt}: {reason}")
        skipped = self.dag.failed(task_id, f"failed after {attempt} attempt(s): {reason}")
        return Actions(
            finals=[Final(task_id, node.role, "failed", attempt, error=node.reason),
                    *(Final(s.id, s.role, "skipped", s.attempts, error=s.reason) for s in skipped)],
            dead_letters=[(task_id, list(node.errors))],
        )

    def cancel(self, task_id: str | None, reason: str) -> Actions:
        """Cancel one task (its dependents follow) or, with no task id, the whole project."""
        changed: list[Node] = []
        if task_id is None:
            self.cancelled = True
            self.sprints.cancel()
            for tid, n in self.dag.nodes.items():
                if n.state not in TERMINAL:
                    changed += self.dag.cancel(tid, reason)
        elif task_id in self.dag.nodes:
            changed = self.dag.cancel(task_id, reason)
        status = {State.CANCELLED: "cancelled", State.SKIPPED: "skipped"}
        return Actions(finals=[Final(n.id, n.role, status[n.state], n.attempts, error=n.reason)
                               for n in changed if n.state in status])

    def approve(self, task_id: str) -> Actions:
        """Approve a task waiting for it, or a sprint (by its milestone id)."""
        if task_id in self.dag.nodes:
            self.dag.approve(task_id)
        else:
            self.sprints.approve(task_id)
        return Actions()

    def reject(self, task_id: str, reason: str) -> Actions:
        cancelled = None if task_id in self.dag.nodes else self.sprints.reject(self.dag, task_id, reason)
        if cancelled is not None:
            status = {State.CANCELLED: "cancelled", State.SKIPPED: "skipped"}
            return Actions(finals=[Final(n.id, n.role, status[n.state], n.attempts, error=n.reason)
                                   for n in cancelled if n.state in status])
        if task_id not in self.dag.nodes or self.dag.nodes[task_id].state is not State.AWAITING_APPROVAL:
            return Actions()
        node = self.dag.nodes[task_id]
        skipped = self.dag.reject(task_id, reason)
        return Actions(finals=[Final(task_id, node.role, "failed", 0, error=node.reason),
                               *(Final(s.id, s.role, "skipped", s.attempts, error=s.reason) for s in skipped)])

    # --- dispatch --------------------------------------------------------------------------

    @property
    def budget_spent(self) -> bool:
        return self.budget_usd is not None and self.cost_usd >= self.budget_usd

    def dispatchable(self, *, now_ms: int, limits: Limits | None = None) -> list[Dispatch]:
        """Release due retries and take ready tasks, unless cancelled or the budget is spent."""
        self.dag.release_due(now_ms)
        if self.cancelled or self.budget_spent:
            return []
        taken = self.dag.take(limits, now_ms)
        for n in taken:
            # A task reading a restricted task's output carries that output in its prompt: it is
            # restricted too (local models only), and so, in turn, is whatever reads its own output.
            if n.privacy != "restricted" and any(self.dag.nodes[d].privacy == "restricted" for d in n.depends_on):
                n.privacy = "restricted"
        return [Dispatch(n.id, n.role, n.description, n.attempts, n.priority, self.dag.dependency_outputs(n.id),
                         n.privacy, n.acceptance)
                for n in taken]

    def next_retry_ms(self) -> int | None:
        return self.dag.next_retry_ms()

    def on_started(self, task_id: str, attempt: int, *, now_ms: int) -> None:
        """An agent picked the attempt up: its timeout counts from now, not from the dispatch, so
        a backlog on the role topic does not time attempts out. Stale pickups change nothing."""
        node = self.dag.nodes.get(task_id)
        if node is None or node.state is not State.DISPATCHED or attempt != node.attempts:
            return
        node.started_ms = now_ms
        self.dag.touched.add(task_id)

    @staticmethod
    def _deadline(node: Node, timeout_ms: int, pickup_ms: int | None) -> int | None:
        if node.started_ms is not None:
            return node.started_ms + timeout_ms
        if node.dispatched_ms is None:
            return None
        return node.dispatched_ms + (timeout_ms if pickup_ms is None else pickup_ms)

    def next_timeout_ms(self, timeout_ms: int, pickup_ms: int | None = None) -> int | None:
        """When the earliest dispatched attempt runs out of time (None: nothing is in flight)."""
        deadlines = [d for t in self.dag.by_state[State.DISPATCHED]
                     if (d := self._deadline(self.dag.nodes[t], timeout_ms, pickup_ms)) is not None]
        return min(deadlines) if deadlines else None

    def time_out(self, *, now_ms: int, timeout_ms: int, policy: RetryPolicy, rng: random.Random,
                 pickup_ms: int | None = None) -> Actions:
        """Attempts with no outcome within ``timeout_ms`` of their pickup, or not picked up within
        ``pickup_ms`` of their dispatch (default: ``timeout_ms``), fail and are retried like any
        failure: an assignment lost on its way, or an agent stuck, must not hold its task forever.
        A late outcome of such an attempt is then stale and ignored."""
        out = Actions()
        for tid in sorted(self.dag.by_state[State.DISPATCHED]):
            node = self.dag.nodes[tid]
            deadline = self._deadline(node, timeout_ms, pickup_ms)
            if deadline is None or now_ms < deadline:
                continue
            why = (f"no outcome within {timeout_ms / 1000:g}s of its pickup" if node.started_ms is not None else
                   f"not picked up within {(timeout_ms if pickup_ms is None else pickup_ms) / 1000:g}s")
            acts = self.on_attempt(tid, node.attempts, False, "", why,
                                   0.0, now_ms=now_ms, policy=policy, rng=rng)
            out.finals += acts.finals
            out.dead_letters += acts.dead_letters
            out.retry_at_ms += acts.retry_at_ms
        return out

    # --- status ----------------------------------------------------------------------------

    def status(self, *, now_ms: int, live_roles: set[str] | None = None, max_tasks: int = STATUS_MAX_TASKS,
               max_path: int = STATUS_MAX_PATH) -> dict[str, Any]:
        """The project's status snapshot, bounded whatever the project's size: ``max_tasks`` tasks
        (unfinished first) and the first ``max_path`` ids of the critical path (a note counts the rest)."""
        counts = self.dag.counts()
        for name, n in self.archived.items():
            counts[name] += n
        total = max(sum(counts.values()), 1)
        finished = sum(counts[s.value] for s in TERMINAL)
        if self.dag.done:
            state = "cancelled" if self.cancelled else (
                "succeeded" if counts[State.SUCCEEDED.value] == sum(counts.values()) else "failed")
        else:
            state = "budget_exhausted" if self.budget_spent else "running"
        notes = []
        if self.budget_spent and not self.dag.done:
            notes.append(f"budget ${self.budget_usd:.4f} spent (${self.cost_usd:.4f}): no new dispatches")
        if live_roles is not None:
            waiting = sorted({n.role for n in self.dag.nodes.values()
                              if n.state in (State.READY, State.DISPATCHED) and n.role not in live_roles})
            notes += [f"no live agent for role {r!r}: its tasks wait" for r in waiting]
        sprints, replans = self.sprints.status(self.dag)
        notes += [f"sprint {s['id']} awaits approval: aios approve {s['id']} --project {self.dag.project}"
                  for s in sprints if s["state"] == AWAITING_APPROVAL]
        notes += [f"the re-plan after sprint {r['after']} failed: {r['error']}" for r in replans if r["state"] == "failed"]
        path = self.dag.critical_path()
        if len(path) > max_path:
            notes.append(f"the critical path has {len(path)} tasks; the first {max_path} are listed")
        return {
            "project_id": self.dag.project, "state": state, "counts": counts,
            "percent_done": round(100.0 * finished / total, 2), "critical_path": path[:max_path],
            "cost_usd": self.cost_usd, "budget_usd": self.budget_usd, "started_at": self.started_ms,
            "elapsed_ms": max(0, now_ms - self.started_ms), "notes": notes,
            # Unfinished tasks first; a very large project lists only the first ``max_tasks``.
            "tasks": [{"task_id": n.id, "role": n.role, "state": n.state.value, "attempts": n.attempts,
                       "reason": cut(n.reason, MAX_REASON_CHARS), "milestone": milestone_of(n, self.sprints.sprints),
                       "review": n.review, **{k: getattr(n, k) for k in _SPRINT_STATUS}}
                      for n in sorted(self.dag.nodes.values(), key=lambda n: n.state in TERMINAL)[:max_tasks]],
            "sprints": sprints, "replans": replans,
        }
