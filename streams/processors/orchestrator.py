"""The orchestrator: plans become task DAGs; ready tasks go to their role topics; attempts are
retried with backoff; every task ends with one terminal result.

Its inputs (tasks, projects, attempts, control) are co-partitioned and keyed by project_id, so
one instance owns each project. It is an exactly-once processor (``transactional.py``): each
batch's outputs (assignments, finals, dead letters, statuses) and the state entries it changed
are written in one Kafka transaction with the batch's input positions. Project state is kept in
memory and logged, one entry per project and per task, to the compacted ``orchestrator-state``
topic in the input's partition, together with the positions of that partition's inputs; a
restarted (or newly assigned) orchestrator rebuilds the state from there and resumes reading
exactly where the state stops.
Retries never sleep on a partition: due retries are released by the loop between batches.

Every input is checked against the shared limits (``schemas/checks.py``) before it touches a
project's state; one that breaks them is dead-lettered with the reason. Whatever else a record
makes raise is dead-lettered by the transactional loop, after an abort, so no half-applied record
reaches the state. Assignments carry excerpts of dependency outputs with a reference to the whole
(``dag.dependency_outputs``), and statuses a bounded task list and path: every output fits a topic.
"""

from __future__ import annotations

import random
import uuid
from typing import Any, Literal

import faust
from confluent_kafka import Message, TopicPartition
from opentelemetry import trace
from opentelemetry.trace import SpanContext

from aios.agents.tools_ask import ask_depth
from aios.schemas.checks import check
from aios.schemas.errors import SchemaError
from aios.schemas.events import envelope, new_id, now_ms, to_ms
from aios.schemas.limits import MAX_ERROR_CHARS, cut
from aios.streams.engine.records import dead_letter_event, log
from aios.streams.engine.runtime import Runtime
from aios.streams.engine.transactional import TransactionalProcessor
from aios.streams.kafka import read_partition
from aios.streams.logs import ids_scope
from aios.streams.metrics import EVENTS
from aios.streams.orchestration.dag import Limits
from aios.streams.orchestration.entries import POSITIONS_KEY, Rebuilder, encode_changes, encode_positions
from aios.streams.orchestration.goal import GOAL_TASK, goal_plan, planned_work
from aios.streams.orchestration.plan import Estimate, Milestone, Plan, PlanError, PlannedTask, validate_plan
from aios.streams.orchestration.state import PERMANENT_ERRORS, Actions, Final, ProjectState, RetryPolicy
from aios.streams.readmodels.agent_registry import AgentRegistry
from aios.streams.tracing import headers_for, parent_from, span, within

NAME = "orchestrator"
POLICY = RetryPolicy()
BATCH_SIZE = 500
# A project's status snapshot is emitted at most this often while it runs (computing it, critical
# path included, is the costliest thing the orchestrator does per project); at once when it ends.
STATUS_INTERVAL_MS = 1000
SWEEP_INTERVAL_MS = 10_000  # how often finished projects past their retention are archived
_rng = random.Random()  # noqa: S311 - retry jitter, not security


def _final_id(project: str, task_id: str, what: str) -> str:
    # Deterministic ids: downstream stores dedup by event id. Plan task ids are only unique
    # within their project.
    return uuid.uuid5(uuid.NAMESPACE_URL, f"aios:{project}:{task_id}:{what}").hex


def final_result(project: str, f: Final, attempt: dict[str, Any] | None, trace_id: str,
                 submitted_ms: int) -> dict[str, Any]:
    base = dict(attempt) if attempt is not None else {
        "agent_id": NAME, "provider": "", "model": "", "input_tokens": 0, "output_tokens": 0,
        "cost_usd": 0.0, "latency_ms": 0.0, "output": f.output, "submitted_at": submitted_ms}
    base.update({
        "event_id": _final_id(project, f.task_id, "final"), "timestamp": now_ms(), "trace_id": trace_id,
        "task_id": f.task_id, "project_id": project, "role": f.role, "attempt": f.attempt,
        # Reasons nest ("dependency a failed: failed after 3 attempt(s): ..."): kept within the limit.
        "status": f.status, "error": None if f.error is None else cut(f.error, MAX_ERROR_CHARS),
    })
    if f.status != "succeeded":
        base["output"] = ""  # the error says what happened; a failed attempt's partial text is not a result
    return base


def _estimate(t: dict[str, Any]) -> Estimate | None:
    tokens, seconds, usd = t.get("estimate_tokens", 0), t.get("estimate_seconds", 0.0), t.get("estimate_usd", 0.0)
    return Estimate(tokens=tokens, seconds=seconds, cost_usd=usd) if tokens or seconds or usd else None


def _privacy(value: str | None) -> Literal["normal", "restricted"]:
    # Fail closed: anything but "normal" (a typo included) keeps the task on local models.
    return "normal" if value in (None, "normal") else "restricted"


class Orchestrator(TransactionalProcessor):
    """Turns decoded inputs into state changes and output events, a batch per transaction."""

    name = NAME

    def __init__(self, rt: Runtime, registry: AgentRegistry, **kwargs: Any) -> None:
        super().__init__(rt, rt.topics.orchestrator_inputs(), batch_size=BATCH_SIZE,
                         fence_by_group=rt.settings.processing.orchestrator_group_fencing, **kwargs)
        s = rt.settings
        self.registry = registry
        self.limits = Limits(per_project=s.processing.project_concurrency, per_role=dict(s.processing.role_concurrency))
        self.roles = set(s.processing.roles)
        self.approve_every_sprint = s.processing.sprint_approval == "every"
        self.states: dict[str, ProjectState] = {}
        self.partition_of: dict[str, int] = {}  # project -> the input partition that owns it
        self.due: dict[str, int] = {}  # project -> its earliest pending retry
        self.status_at: dict[str, int] = {}  # project -> when its last status went out
        self.dirty: dict[str, str] = {}  # projects changed in this batch -> a trace id for their events
        self.stale_status: dict[str, str] = {}  # projects whose status is behind -> a trace id
        # ... and the dispatch span that last changed it: the status's traceparent names it.
        self.status_parent: dict[str, SpanContext] = {}
        self.positions: dict[int, dict[str, int]] = {}  # partition -> input topic -> next offset
        self.retention_ms = int(s.processing.finished_project_retention_s * 1000)
        self.timeout_ms = int(s.processing.task_timeout_s * 1000)
        self.pickup_ms = int(s.processing.pickup_timeout_s * 1000)
        self.next_sweep_ms = 0
        t = rt.topics
        # What each input topic carries: another record type there is a producer's mistake.
        self.carries = {t.tasks: "Task", t.projects: "ProjectPlan", t.attempts: "TaskResult", t.control: "Control"}

    # --- state: rebuilt per partition from the state log -----------------------------------

    def on_assigned(self, partitions: list[int]) -> dict[tuple[str, int], int]:
        resume: dict[tuple[str, int], int] = {}
        for p in partitions:
            rebuilder = Rebuilder()
            for msg in read_partition(self.rt.settings, self.rt.topics.orchestrator_state, p):
                rebuilder.add(msg.key() or b"", msg.value())
            for project, state in rebuilder.states().items():
                self._adopt(project, state, p)
            self.positions[p] = dict(rebuilder.positions)
            resume.update({(topic, p): offset for topic, offset in rebuilder.positions.items()})
            log.info("%s: partition %d holds %d projects", NAME, p, len(rebuilder.metas))
        return resume

    def record_positions(self, positions: list[TopicPartition]) -> bool:
        """The batch's input positions go into the state log, in the same transaction as the state."""
        changed: set[int] = set()
        for tp in positions:
            known = self.positions.setdefault(tp.partition, {})
            if known.get(tp.topic) != tp.offset:
                known[tp.topic] = tp.offset
                changed.add(tp.partition)
        for p in changed:
            self.produce(self.rt.topics.orchestrator_state, encode_positions(self.positions[p]), POSITIONS_KEY, p)
        return True

    def _adopt(self, project: str, state: ProjectState, partition: int) -> None:
        self.states[project], self.partition_of[project] = state, partition
        self._schedule(project, state)
        if not state.dag.done:
            self.stale_status[project] = ""  # a restart refreshes the status of unfinished projects

    def _schedule(self, project: str, state: ProjectState) -> None:
        """When the project next needs the loop's attention: a retry falls due or an attempt times out."""
        deadlines = [t for t in (state.next_retry_ms(), state.next_timeout_ms(self.timeout_ms, self.pickup_ms)) if t is not None]
        if deadlines:
            self.due[project] = min(deadlines)
        else:
            self.due.pop(project, None)

    def on_revoked(self, partitions: list[int]) -> None:
        gone = set(partitions)
        for p in partitions:
            self.positions.pop(p, None)
        for project in [p for p, part in self.partition_of.items() if part in gone]:
            del self.states[project], self.partition_of[project]
            self.due.pop(project, None)
            self.status_at.pop(project, None)
            self.stale_status.pop(project, None)
            self.status_parent.pop(project, None)

    def on_aborted(self) -> dict[tuple[str, int], int]:
        # The batch mutated states that its transaction did not record: start again from the log.
        partitions = sorted(self.positions)
        self.dirty.clear()
        self.on_revoked(partitions)
        return self.on_assigned(partitions)

    # --- a batch ---------------------------------------------------------------------------

    def has_timed_work(self) -> bool:
        now = now_ms()
        return now >= self.next_sweep_ms or any(due <= now for due in self.due.values()) or any(
            now - self.status_at.get(p, 0) >= STATUS_INTERVAL_MS for p in self.stale_status)

    def process(self, batch: list[Message]) -> None:
        for msg in self.records(batch):
            self._one(msg)
            if self.isolating:  # this batch's state entries failed once: find the record that did it
                self._log_dirty()
        now = now_ms()
        for project, due in list(self.due.items()):
            if due <= now:
                self._release_due(project, now)
        if now >= self.next_sweep_ms:
            self._archive_finished(now)
        self._write_changes(now)

    def _archive_finished(self, now: int) -> None:
        """Finished projects past AIOS_FINISHED_PROJECT_RETENTION_S keep only their counts: memory
        and the state log do not grow with every task ever run."""
        self.next_sweep_ms = now + SWEEP_INTERVAL_MS
        for project, state in self.states.items():
            if state.dag.nodes and state.finished_ms is not None and now - state.finished_ms >= self.retention_ms:
                state.archive_all()
                # Logged, but no new status: the last one, with its task list, stays on the topic.
                self._log_changes(project, state)

    def _one(self, msg: Message) -> None:
        try:
            decoded = self.rt.codec.decode(msg.value())
            name = decoded.name.rsplit(".", 1)[-1]
            expected = self.carries.get(str(msg.topic()))
            if name != expected:
                raise SchemaError(f"{msg.topic()} carries {expected} events, not {name}")
            check(name, decoded.value)  # before the record touches any state
        except SchemaError as exc:
            self._dead_letter(msg, exc)
            EVENTS.labels(NAME, "dead_letter").inc()
            return
        v = decoded.value
        # The dispatch: what this record releases (Assignments, finals) is produced inside the span,
        # so each output's traceparent names it.
        with ids_scope(project_id=v.get("project_id"), task_id=v.get("task_id"), trace_id=v.get("trace_id")), \
                span("dispatch", v["trace_id"], parent_from(msg.headers()), attributes={
                "aios.event": name, "aios.project_id": v["project_id"], "aios.task_id": v.get("task_id") or "",
                "aios.attempt": v.get("attempt") or 0}):
            self.handle(name, v, msg)

    def handle(self, name: str, v: dict[str, Any], msg: Message) -> None:
        project = v["project_id"]
        now = now_ms()
        state = self.states.get(project)
        attempt_event: dict[str, Any] | None = None
        if name == "ProjectPlan":
            if state is not None:
                self._dead_letter(msg, PlanError([f"project {project!r} already exists; plans are submitted once"]))
                return
            try:
                state = self._new_project(project, v)
            except (PlanError, ValueError) as exc:
                self._dead_letter(msg, exc)
                return
            actions = Actions()
        elif name == "Task":
            if state is None:
                state = ProjectState.empty(project, now_ms=now)
            task = PlannedTask(id=v["task_id"], role=v["role"], description=v["description"],
                               depends_on=tuple(v["depends_on"]), priority=v["priority"],
                               privacy=_privacy(v.get("privacy")))
            submitted = to_ms(v["timestamp"])
            if v["role"] not in self.roles:
                reason = (f"unknown role {v['role']!r}; this deployment runs: "
                          f"{', '.join(sorted(self.roles))} (AIOS_ROLES)")
                actions = state.fail_task(task, reason, submitted_ms=submitted)
            elif ask_depth(task.id) and (state.budget_spent or state.cancelled):
                # An agent's question (ask_agent) in a project that may start nothing more: answered
                # at once with the reason, which the asking model reads, rather than left pending.
                reason = ("the project is cancelled" if state.cancelled else
                          f"the project's budget ${state.budget_usd or 0:.4f} is spent (${state.cost_usd:.4f})")
                actions = state.fail_task(task, f"not asked: {reason}", submitted_ms=submitted)
            else:
                actions = state.add_task(task, submitted_ms=submitted)
        elif name == "TaskResult":
            if state is None:  # another deployment's project, or one whose log was deleted
                EVENTS.labels(NAME, "ignored").inc()
                return
            if v["status"] == "started":
                state.on_started(v["task_id"], v["attempt"], now_ms=now)
                self._schedule(project, state)
                self.dirty[project] = v["trace_id"]
                self.status_parent[project] = trace.get_current_span().get_span_context()
                return
            attempt_event = v
            spent = state.budget_spent
            ref = f"kafka://{msg.topic()}/{msg.partition()}/{msg.offset()}"  # where dependents read it whole
            actions = self._on_attempt(project, state, v, now, ref)
            if state.budget_spent and not spent and not state.dag.done:
                self._cancel_for_budget(project, state, v["trace_id"])
        else:  # Control
            if state is None:
                return
            task_id, action = v.get("task_id"), v["action"]
            if action == "cancel":
                actions = state.cancel(task_id, v["reason"] or "cancelled")
            elif action == "approve" and task_id:
                actions = state.approve(task_id)
            elif action == "reject" and task_id:
                actions = state.reject(task_id, v["reason"] or "rejected")
            else:
                actions = Actions()  # retry_due (from older orchestrators): released below
        self.states[project] = state
        self.partition_of[project] = int(msg.partition() or 0)
        self._apply(project, state, actions, attempt_event, v["trace_id"], msg, now)

    def _cancel_for_budget(self, project: str, state: ProjectState, trace_id: str) -> None:
        """The project's budget is spent: a cancel on the control topic, in this transaction, stops
        the agents still working on its tasks (and, read back here, cancels what is left)."""
        control = {
            **envelope(trace_id), "event_id": _final_id(project, "", "budget-cancel"), "project_id": project,
            "action": "cancel", "task_id": None, "requested_by": "orchestrator",
            "reason": f"budget ${state.budget_usd or 0:.4f} spent (${state.cost_usd:.4f})",
        }
        self._send(self.rt.topics.control, "Control", control, project)
        EVENTS.labels(NAME, "budget_cancel").inc()

    def _new_project(self, project: str, v: dict[str, Any]) -> ProjectState:
        from_goal = bool(v["goal"]) and not v["tasks"]
        if from_goal:
            plan = goal_plan(project, v["goal"], v["budget_usd"], self.roles)
        else:
            plan = Plan(project=project, budget_usd=v["budget_usd"], tasks=tuple(
                PlannedTask(id=t["task_id"], role=t["role"], description=t["description"],
                            depends_on=tuple(t["depends_on"]), priority=t["priority"],
                            acceptance=t["acceptance"], requires_approval=t["requires_approval"],
                            privacy=_privacy(t.get("privacy")), milestone=t.get("milestone") or "",
                            estimate=_estimate(t))
                for t in v["tasks"]), milestones=tuple(
                Milestone(id=m["id"], title=m["title"], requires_approval=m["requires_approval"])
                for m in v.get("milestones") or ()))
        validate_plan(plan, self.roles)
        state = ProjectState.from_plan(plan, now_ms=to_ms(v["timestamp"]))
        state.goal = from_goal
        return state

    def _on_attempt(self, project: str, state: ProjectState, v: dict[str, Any], now: int, ref: str) -> Actions:
        ok, error, expansion, change = v["status"] == "succeeded", v["error"], None, None
        if ok and state.goal and v["task_id"] == GOAL_TASK and GOAL_TASK in state.dag.nodes:
            try:
                expansion = planned_work(project, state.dag.nodes[GOAL_TASK].description, v["output"], self.roles)
            except PlanError as exc:  # a failed attempt: the planner gets another go
                ok, error = False, f"the planner's plan is invalid: {exc}"
        elif ok:
            try:
                change = state.plan_change(v["task_id"], v["output"], self.roles, v["attempt"])
            except PlanError as exc:  # as for a goal's plan; once out of attempts, the plan is kept
                ok, error = False, f"the planner's re-plan is invalid: {exc}"
                EVENTS.labels(NAME, "replan_invalid").inc()
        actions = state.on_attempt(v["task_id"], v["attempt"], ok, v["output"], error, v["cost_usd"],
                                   now_ms=now, policy=POLICY, rng=_rng,
                                   retryable=v["error_type"] not in PERMANENT_ERRORS, output_ref=ref,
                                   tokens=v["input_tokens"] + v["output_tokens"], seconds=v["latency_ms"] / 1000)
        succeeded = any(f.task_id == v["task_id"] and f.status == "succeeded" for f in actions.finals)
        if expansion and succeeded:
            state.extend(expansion[0], now_ms=now, milestones=expansion[1])
        if change is not None and succeeded:
            state.apply_change(v["task_id"], change, now_ms=now)
            EVENTS.labels(NAME, "replanned").inc()
        return actions

    def _release_due(self, project: str, now: int) -> None:
        state = self.states.get(project)
        if state is None:
            self.due.pop(project, None)
            return
        actions = state.time_out(now_ms=now, timeout_ms=self.timeout_ms, policy=POLICY, rng=_rng,
                                 pickup_ms=self.pickup_ms)
        trace_id = self.stale_status.get(project) or new_id()
        with span("dispatch", trace_id, attributes={"aios.event": "timer", "aios.project_id": project}):
            self._apply(project, state, actions, None, trace_id, None, now)

    def _apply(self, project: str, state: ProjectState, actions: Actions, attempt_event: dict[str, Any] | None,
               trace_id: str, msg: Message | None, now: int) -> None:
        """Emit an event's finals, the dispatches it made possible and its dead letters."""
        t = self.rt.topics
        for f in actions.finals:
            attempt = attempt_event if attempt_event is not None and attempt_event["task_id"] == f.task_id else None
            result = final_result(project, f, attempt, trace_id, state.submitted_at.get(f.task_id, state.started_ms))
            self._send(t.finals, "TaskResult", result, project)
            EVENTS.labels(NAME, f.status).inc()
        state.advance_sprints(now_ms=now, roles=self.roles, approve_every=self.approve_every_sprint)
        dispatched = 0
        for d in state.dispatchable(now_ms=now, limits=self.limits):
            assignment = {
                **envelope(trace_id), "event_id": _final_id(project, d.task_id, f"assign-{d.attempt}"),
                "task_id": d.task_id, "project_id": project, "role": d.role, "description": d.description,
                "attempt": d.attempt, "priority": d.priority, "privacy": d.privacy, "context": d.context,
                "acceptance": d.acceptance,
                "submitted_at": state.submitted_at.get(d.task_id, state.started_ms),
            }
            self._send(t.role(d.role), "Assignment", assignment, d.task_id)
            EVENTS.labels(NAME, "dispatched").inc()
            dispatched += 1
        current = trace.get_current_span()
        if current.is_recording():
            current.set_attributes({"aios.dispatched": dispatched, "aios.finals": len(actions.finals)})
        for task_id, errors in actions.dead_letters:
            self._dead_letter(msg, RuntimeError(f"task {task_id} failed after {len(errors)} attempts"), errors,
                              key=project)
        state.archive_finished_standalone()
        if state.dag.done:
            state.finished_ms = state.finished_ms or now
        else:
            state.finished_ms = None  # a new task joined a finished project
        self._schedule(project, state)
        self.dirty[project] = trace_id
        self.status_parent[project] = trace.get_current_span().get_span_context()

    def _log_dirty(self) -> None:
        """The state entries of the projects changed since the last call."""
        for project, trace_id in self.dirty.items():
            self._log_changes(project, self.states[project])
            self.stale_status[project] = trace_id
        self.dirty.clear()

    def _write_changes(self, now: int) -> None:
        """The batch's state entries, and the statuses that are due, into the open transaction."""
        self._log_dirty()
        live_roles: set[str] | None = None
        asked = False
        for project, trace_id in list(self.stale_status.items()):
            state = self.states[project]
            if not state.dag.done and now - self.status_at.get(project, 0) < STATUS_INTERVAL_MS:
                continue
            if not asked:  # once per batch; None until the registry caught up (then no note at all)
                live_roles, asked = self.registry.live_roles(), True
            status = {**envelope(trace_id or None), **state.status(now_ms=now, live_roles=live_roles)}
            # Through the committer's outbox: a status never shows results not yet on aios.results.
            with within(self.status_parent.pop(project, None)):
                self._send(self.rt.topics.finals, "ProjectStatus", status, project)
            self.status_at[project] = now
            del self.stale_status[project]

    # --- output ----------------------------------------------------------------------------

    def _log_changes(self, project: str, state: ProjectState) -> None:
        # Same partition as the project's inputs: whoever owns the input partition owns this.
        partition = self.partition_of[project]
        for key, value in encode_changes(state):
            self.produce(self.rt.topics.orchestrator_state, value, key, partition)

    def _send(self, topic: str, record: str, value: dict[str, Any], key: str) -> None:
        self.produce(topic, self.rt.codec.encode(record, value, topic), key, headers=headers_for(value))

    def _dead_letter(self, msg: Message | None, exc: Exception, errors: list[str] | None = None,
                     key: str | None = None) -> None:
        """The input record and why it failed; with no record (a task that timed out), its errors."""
        if msg is not None:
            self.dead_letter(msg, exc, errors, key)
            return
        letter = dead_letter_event(self.rt.topics.attempts, -1, -1, None, None, NAME, exc, errors)
        self._send(self.rt.topics.dlq, "DeadLetter", letter, key or NAME)


def register(app: faust.App, rt: Runtime) -> None:
    registry = AgentRegistry(rt)
    rt.services.append(registry)
    rt.services.append(Orchestrator(rt, registry))
