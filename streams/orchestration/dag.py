"""The state of one project's task DAG: which tasks are ready, done, failed, skipped.

Pure and deterministic: the orchestrator processor feeds it events (results, approvals,
cancellations) and dispatches what it returns. The same events replayed rebuild the same state,
which is how the orchestrator recovers from its changelog after a crash.
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field

from aios.schemas.limits import DEPENDENCY_EXCERPT_BYTES, MAX_CONTEXT_BYTES, excerpt
from aios.streams.orchestration.graph import topological_order
from aios.streams.orchestration.plan import Plan, PlannedTask, sprint_numbers


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
    dispatched_ms: int | None = None  # when the current attempt went out (for its pickup timeout)
    started_ms: int | None = None  # when an agent picked the current attempt up (for its timeout)
    output_ref: str = ""  # where the whole output can be read (the attempt that produced it)
    # Sprints (sprints.py): the sprint the task runs in (0: before any), and what a sprint's own
    # steps are ("review", "replan"; "" for planned work). A task waits until its sprint opens.
    sprint: int = 0
    kind: str = ""
    estimate_tokens: int = 0
    estimate_seconds: float = 0.0
    estimate_usd: float = 0.0
    # Actuals, summed over every attempt: tokens in and out, seconds in LLM calls, cost.
    tokens: int = 0
    seconds: float = 0.0
    cost_usd: float = 0.0
    review: str = ""  # the sprint review's verdict on this task: "" | approve | request_changes: why


def node_of(t: PlannedTask, sprint: int = 0) -> Node:
    """A planned task as a DAG node, in ``sprint``."""
    e = t.estimate
    return Node(t.id, t.role, t.priority, t.depends_on, t.requires_approval, description=t.description,
                acceptance=t.acceptance, privacy=t.privacy, sprint=sprint,
                estimate_tokens=e.tokens if e else 0, estimate_seconds=e.seconds if e else 0.0,
                estimate_usd=e.cost_usd if e else 0.0)


def _order(n: Node) -> tuple[int, str]:
    return -n.priority, n.id


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
        self.open_sprint = 0  # tasks of later sprints wait, whatever their dependencies
        self._init_index()
        sprint = sprint_numbers(plan.milestones)
        for t in plan.tasks:
            self.add(node_of(t, sprint.get(t.milestone, 0)), ready=False)
        for node in self.nodes.values():
            self._maybe_ready(node)

    @classmethod
    def empty(cls, project: str) -> ProjectDag:
        dag = cls.__new__(cls)
        dag.project, dag.nodes, dag.dependents, dag.touched = project, {}, {}, set()
        dag.open_sprint = 0
        dag._init_index()
        return dag

    def _init_index(self) -> None:
        # Task ids by state, and those waiting out a retry backoff: every event asks for the ready
        # and running tasks, and scanning all of a 1,000-task project each time was most of the
        # orchestrator's work per event.
        self.by_state: dict[State, set[str]] = {s: set() for s in State}
        self.retrying: set[str] = set()
        # Ready tasks in dispatch order. Entries of tasks that left READY stay until popped (a
        # lazy heap): an event that frees one slot then costs a pop, not a sort of the backlog.
        self.ready_heap: list[tuple[int, str]] = []

    def set_state(self, node: Node, state: State) -> None:
        """Every state change goes through here: it keeps the index and marks the node for the log."""
        self.by_state[node.state].discard(node.id)
        node.state = state
        self.by_state[state].add(node.id)
        self.touched.add(node.id)
        if state is State.READY:
            heapq.heappush(self.ready_heap, _order(node))

    def remove(self, task_id: str) -> Node:
        node = self.nodes.pop(task_id)
        self.by_state[node.state].discard(task_id)
        self.retrying.discard(task_id)
        self.dependents.pop(task_id, None)
        self.touched.discard(task_id)
        return node

    def drop(self, task_id: str) -> Node:
        """Remove a task nothing left depends on (a re-plan dropped or replaced it), and its edges."""
        node = self.remove(task_id)
        for dep in node.depends_on:
            if task_id in self.dependents.get(dep, ()):
                self.dependents[dep].remove(task_id)
        return node

    def open(self, sprint: int) -> None:
        """Let the tasks of sprints up to ``sprint`` run once their dependencies have succeeded."""
        self.open_sprint = sprint
        for node in list(self.nodes.values()):
            if node.sprint == sprint:
                self._maybe_ready(node)

    def add(self, node: Node, *, ready: bool = True) -> None:
        """Add a task whose dependencies are already in the DAG (standalone tasks join this way)."""
        self.nodes[node.id] = node
        self.touched.add(node.id)
        self.by_state[node.state].add(node.id)
        if node.state is State.READY:
            heapq.heappush(self.ready_heap, _order(node))
        if node.retry_at_ms is not None:
            self.retrying.add(node.id)
        self.dependents.setdefault(node.id, [])
        for dep in node.depends_on:
            self.dependents.setdefault(dep, []).append(node.id)
        if ready:
            self.settle(node)

    def settle(self, node: Node) -> None:
        """A new node whose dependencies are all in the DAG: skipped if one did not succeed, else
        ready (or awaiting approval) once they have."""
        if any(self.nodes[d].state in (State.FAILED, State.SKIPPED, State.CANCELLED) for d in node.depends_on):
            self.set_state(node, State.SKIPPED)
            node.reason = "a dependency did not succeed"
        else:
            self._maybe_ready(node)

    def reindex_edges(self) -> None:
        """Rebuild who depends on whom (after a re-plan replaced tasks others depend on)."""
        self.dependents = {tid: [] for tid in self.nodes}
        for node in self.nodes.values():
            for dep in node.depends_on:
                self.dependents.setdefault(dep, []).append(node.id)

    # --- queries ---------------------------------------------------------------------------

    def ready(self) -> list[Node]:
        """Ready tasks, highest priority first, then by id for a stable order."""
        return sorted((self.nodes[t] for t in self.by_state[State.READY]), key=_order)

    def counts(self) -> dict[str, int]:
        return {s.value: len(ids) for s, ids in self.by_state.items()}

    @property
    def done(self) -> bool:
        return all(not ids for s, ids in self.by_state.items() if s not in TERMINAL)

    def dependency_outputs(self, task_id: str) -> dict[str, str]:
        """What travels with a task: the outputs of the tasks it depends on, each cut to an excerpt
        with a reference to the whole, all of them within MAX_CONTEXT_BYTES (an assignment must fit
        in a Kafka message however many dependencies the task has)."""
        deps = self.nodes[task_id].depends_on
        each = min(DEPENDENCY_EXCERPT_BYTES, MAX_CONTEXT_BYTES // max(len(deps), 1))
        return {d: excerpt(self.nodes[d].output, each, self.nodes[d].output_ref) for d in deps}

    def critical_path(self) -> list[str]:
        """The longest chain of not-yet-succeeded tasks (by count), the work that bounds the finish.

        Among chains of equal length, the first task in insertion order ends it, and each task
        continues the chain of its first longest dependency.
        """
        # Lengths in topological order, then one walk back: recursion overflowed the stack on a
        # chain of ~400 tasks, and keeping each task's whole chain cost quadratic memory.
        length: dict[str, int] = {}
        via: dict[str, str] = {}  # task -> the dependency whose chain it continues
        nodes = self.nodes
        for tid in topological_order({t: n.depends_on for t, n in nodes.items()}):
            node = nodes[tid]
            best = 0
            for dep in node.depends_on:
                if length.get(dep, 0) > best:
                    best, via[tid] = length[dep], dep
            length[tid] = best + (0 if node.state is State.SUCCEEDED else 1)
        end, longest = None, 0
        for tid in nodes:
            if length.get(tid, 0) > longest:
                end, longest = tid, length[tid]
        path: list[str] = []
        while end is not None:
            if nodes[end].state is not State.SUCCEEDED:
                path.append(end)
            end = via.get(end)
        return path[::-1]

    # --- transitions -----------------------------------------------------------------------

    def retry_later(self, task_id: str, error: str, retry_at_ms: int) -> None:
        """A failed attempt that will be retried: back to waiting until ``retry_at_ms``."""
        node = self.nodes[task_id]
        node.errors.append(error)
        self.set_state(node, State.PENDING)
        node.retry_at_ms = retry_at_ms
        self.retrying.add(task_id)

    def release_due(self, now_ms: int) -> list[Node]:
        """Failed attempts whose backoff has passed become ready again."""
        due = []
        for tid in list(self.retrying):
            n = self.nodes[tid]
            if n.state is not State.PENDING:  # cancelled or skipped while it waited
                self.retrying.discard(tid)
            elif n.retry_at_ms is not None and n.retry_at_ms <= now_ms:
                self.retrying.discard(tid)
                n.retry_at_ms = None
                self.set_state(n, State.READY)
                due.append(n)
        return due

    def next_retry_ms(self) -> int | None:
        """When the earliest retry falls due (None: no task waits for one)."""
        due = [n.retry_at_ms for t in self.retrying
               if (n := self.nodes[t]).state is State.PENDING and n.retry_at_ms is not None]
        return min(due) if due else None

    def take(self, limits: Limits | None = None, now_ms: int | None = None) -> list[Node]:
        """Mark ready tasks dispatched, by priority, within the concurrency limits; return them."""
        limits = limits or Limits()
        running = len(self.by_state[State.DISPATCHED])  # before this call's own dispatches
        room = None if limits.per_project is None else limits.per_project - running
        if room is not None and room <= 0 or not self.by_state[State.READY]:
            return []  # under a backlog, most events end here: no ready list is built
        per_role: dict[str, int] = {}
        for tid in self.by_state[State.DISPATCHED]:
            role = self.nodes[tid].role
            per_role[role] = per_role.get(role, 0) + 1
        taken: list[Node] = []
        held: list[tuple[int, str]] = []  # ready, but their role is at its cap: back in the heap after
        while self.ready_heap and (room is None or len(taken) < room):
            entry = heapq.heappop(self.ready_heap)
            node = self.nodes.get(entry[1])
            if node is None or node.state is not State.READY or _order(node) != entry:
                continue  # stale: dispatched, cancelled or archived since it was pushed
            cap = limits.per_role.get(node.role)
            if cap is not None and per_role.get(node.role, 0) >= cap:
                held.append(entry)
                continue
            self.set_state(node, State.DISPATCHED)
            node.attempts += 1
            node.dispatched_ms = now_ms
            node.started_ms = None
            per_role[node.role] = per_role.get(node.role, 0) + 1
            taken.append(node)
        for entry in held:
            heapq.heappush(self.ready_heap, entry)
        return taken

    def succeeded(self, task_id: str, output: str, output_ref: str = "") -> list[Node]:
        """Record success; return dependents that became ready or await approval."""
        node = self.nodes[task_id]
        if node.state in TERMINAL:
            return []  # a duplicate result (redelivery) changes nothing
        self.set_state(node, State.SUCCEEDED)
        node.output, node.output_ref = output, output_ref
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
        self.set_state(node, State.FAILED)
        node.reason = reason
        return self._skip_dependents(task_id, f"dependency {task_id} failed: {reason}")

    def cancel(self, task_id: str, reason: str = "cancelled") -> list[Node]:
        """Cancel a task that has not finished; its dependents follow. Returns every node changed."""
        node = self.nodes[task_id]
        if node.state in TERMINAL:
            return []
        self.set_state(node, State.CANCELLED)
        node.reason = reason
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
        if node.sprint > self.open_sprint:
            return False
        if not all(self.nodes[d].state is State.SUCCEEDED for d in node.depends_on):
            return False
        target = State.AWAITING_APPROVAL if node.requires_approval and not node.approved else State.READY
        if target is node.state:
            return False
        self.set_state(node, target)
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
                self.set_state(n, State.SKIPPED)
                n.reason = reason
                skipped.append(n)
                nxt.extend(self.dependents[tid])
            frontier = nxt
        return skipped
