"""The state of one project's task DAG: which tasks are ready, done, failed, skipped.

Pure and deterministic: the orchestrator processor feeds it events (results, approvals,
cancellations) and dispatches what it returns. The same events replayed rebuild the same state,
which is how the orchestrator recovers from its changelog after a crash.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

from streams.orchestration.plan import Plan


class State(enum.StrEnum):
    PENDING = "pending"  # waiting for dependencies
    AWAITING_APPROVAL = "awaiting_approval"
    READY = "ready"  # dependencies met, not dispatched yet
    DISPATCHED = "dispatched"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


TERMINAL = frozenset({State.SUCCEEDED, State.FAILED, State.SKIPPED, State.CANCELLED})


@dataclass
class Node:
    id: str
    role: str
    priority: int
    depends_on: tuple[str, ...]
    requires_approval: bool = False
    state: State = State.PENDING
    output: str = ""
    reason: str = ""
    approved: bool = False
    description: str = ""
    acceptance: str = ""
    attempts: int = 0  # attempts dispatched so far
    errors: list[str] = field(default_factory=list)  # every failed attempt's error, oldest first
    retry_at_ms: int | None = None  # a failed attempt waits for its backoff; READY once due
    privacy: str = "normal"  # restricted: routed to local models only


@dataclass
class Limits:
    """Concurrency caps on dispatched tasks; None means unlimited."""

    per_project: int | None = None
    per_role: dict[str, int] = field(default_factory=dict)


class ProjectDag:
    """Task states and the transitions the orchestrator may take."""

    def __init__(self, plan: Plan) -> None:
        self.project = plan.project
        self.nodes: dict[str, Node] = {}
        self.dependents: dict[str, list[str]] = {}
        # Ids of nodes changed since the orchestrator last wrote this project's state: only those
        # go to the state log (rewriting a 1,000-task project per event was its main cost).
        self.touched: set[str] = set()
        for t in plan.tasks:
            self.add(Node(t.id, t.role, t.priority, t.depends_on, t.requires_approval,
                          description=t.description, acceptance=t.acceptance, privacy=t.privacy), ready=False)
        for node in self.nodes.values():
            self._maybe_ready(node)

    @classmethod
    def empty(cls, project: str) -> ProjectDag:
        dag = cls.__new__(cls)
        dag.project, dag.nodes, dag.dependents, dag.touched = project, {}, {}, set()
        return dag

    def add(self, node: Node, *, ready: bool = True) -> None:
        """Add a task whose dependencies are already in the DAG (standalone tasks join this way)."""
        self.nodes[node.id] = node
        self.touched.add(node.id)
        self.dependents.setdefault(node.id, [])
        for dep in node.depends_on:
            self.dependents.setdefault(dep, []).append(node.id)
        if ready:
            if any(self.nodes[d].state in (State.FAILED, State.SKIPPED, State.CANCELLED) for d in node.depends_on):
                node.state, node.reason = State.SKIPPED, "a dependency did not succeed"
            else:
                self._maybe_ready(node)

    # --- queries ---------------------------------------------------------------------------

    def ready(self) -> list[Node]:
        """Ready tasks, highest priority first, then by id for a stable order."""
        return sorted((n for n in self.nodes.values() if n.state is State.READY), key=lambda n: (-n.priority, n.id))

    def counts(self) -> dict[str, int]:
        out = {s.value: 0 for s in State}
        for n in self.nodes.values():
            out[n.state.value] += 1
        return out

    @property
    def done(self) -> bool:
        return all(n.state in TERMINAL for n in self.nodes.values())

    def dependency_outputs(self, task_id: str) -> dict[str, str]:
        """What travels with a task: the outputs of the tasks it depends on."""
        return {d: self.nodes[d].output for d in self.nodes[task_id].depends_on}

    def critical_path(self) -> list[str]:
        """The longest chain of not-yet-succeeded tasks (by count), the work that bounds the finish."""
        memo: dict[str, list[str]] = {}

        def longest(tid: str) -> list[str]:
            if tid not in memo:
                node = self.nodes[tid]
                own = [] if node.state is State.SUCCEEDED else [tid]
                best = max((longest(d) for d in node.depends_on), key=len, default=[])
                memo[tid] = best + own
            return memo[tid]

        return max((longest(t) for t in self.nodes), key=len, default=[])

    # --- transitions -----------------------------------------------------------------------

    def retry_later(self, task_id: str, error: str, retry_at_ms: int) -> None:
        """A failed attempt that will be retried: back to waiting until ``retry_at_ms``."""
        node = self.nodes[task_id]
        node.errors.append(error)
        node.state, node.retry_at_ms = State.PENDING, retry_at_ms
        self.touched.add(task_id)

    def release_due(self, now_ms: int) -> list[Node]:
        """Failed attempts whose backoff has passed become ready again."""
        due = [n for n in self.nodes.values()
               if n.state is State.PENDING and n.retry_at_ms is not None and n.retry_at_ms <= now_ms]
        for n in due:
            n.state, n.retry_at_ms = State.READY, None
            self.touched.add(n.id)
        return due

    def take(self, limits: Limits | None = None) -> list[Node]:
        """Mark ready tasks dispatched, by priority, within the concurrency limits; return them."""
        limits = limits or Limits()
        running = [n for n in self.nodes.values() if n.state is State.DISPATCHED]
        per_role: dict[str, int] = {}
        for n in running:
            per_role[n.role] = per_role.get(n.role, 0) + 1
        taken: list[Node] = []
        for node in self.ready():
            if limits.per_project is not None and len(running) + len(taken) >= limits.per_project:
                break
            cap = limits.per_role.get(node.role)
            if cap is not None and per_role.get(node.role, 0) >= cap:
                continue
            node.state = State.DISPATCHED
            node.attempts += 1
            self.touched.add(node.id)
            per_role[node.role] = per_role.get(node.role, 0) + 1
            taken.append(node)
        return taken

    def succeeded(self, task_id: str, output: str) -> list[Node]:
        """Record success; return dependents that became ready or await approval."""
        node = self.nodes[task_id]
        if node.state in TERMINAL:
            return []  # a duplicate result (redelivery) changes nothing
        node.state, node.output = State.SUCCEEDED, output
        self.touched.add(task_id)
        changed = []
        for dep_id in self.dependents[task_id]:
            if self._maybe_ready(self.nodes[dep_id]):
                changed.append(self.nodes[dep_id])
        return changed

    def failed(self, task_id: str, reason: str) -> list[Node]:
        """Record a final failure; every transitive dependent is skipped. Returns the skipped."""
        node = self.nodes[task_id]
        if node.state in TERMINAL:
            return []
        node.state, node.reason = State.FAILED, reason
        self.touched.add(task_id)
        return self._skip_dependents(task_id, f"dependency {task_id} failed: {reason}")

    def cancel(self, task_id: str, reason: str = "cancelled") -> list[Node]:
        """Cancel a task that has not finished; its dependents follow. Returns every node changed."""
        node = self.nodes[task_id]
        if node.state in TERMINAL:
            return []
        node.state, node.reason = State.CANCELLED, reason
        self.touched.add(task_id)
        return [node, *self._skip_dependents(task_id, f"dependency {task_id} was cancelled")]

    def approve(self, task_id: str) -> bool:
        node = self.nodes[task_id]
        node.approved = True
        self.touched.add(task_id)
        return self._maybe_ready(node)

    def reject(self, task_id: str, reason: str) -> list[Node]:
        return self.failed(task_id, f"rejected: {reason}")

    # --- internals -------------------------------------------------------------------------

    def _maybe_ready(self, node: Node) -> bool:
        if node.state not in (State.PENDING, State.AWAITING_APPROVAL) or node.retry_at_ms is not None:
            return False
        if not all(self.nodes[d].state is State.SUCCEEDED for d in node.depends_on):
            return False
        target = State.AWAITING_APPROVAL if node.requires_approval and not node.approved else State.READY
        if target is node.state:
            return False
        node.state = target
        self.touched.add(node.id)
        return True

    def _skip_dependents(self, task_id: str, reason: str) -> list[Node]:
        skipped: list[Node] = []
        frontier: Iterable[str] = list(self.dependents[task_id])
        while frontier:
            nxt: list[str] = []
            for tid in frontier:
                n = self.nodes[tid]
                if n.state in TERMINAL or n.state is State.DISPATCHED:
                    continue
                n.state, n.reason = State.SKIPPED, reason
                self.touched.add(tid)
                skipped.append(n)
                nxt.extend(self.dependents[tid])
            frontier = nxt
        return skipped
