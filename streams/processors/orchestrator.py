"""The orchestrator: plans become task DAGs; ready tasks go to their role topics; attempts are
retried with backoff; every task ends with one terminal result on the results topic.

Its inputs (tasks, projects, attempts, control) are co-partitioned and keyed by project_id, so
one instance owns each project. Project state lives in a changelog-backed faust table, rebuilt
from the changelog when the orchestrator restarts. Retries never sleep on a partition: a timer
notices due retries and sends a ``retry_due`` control event, handled like any other input.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable
from typing import Any, Literal

import faust

from schemas.errors import SchemaError
from schemas.events import envelope, now_ms, to_ms
from streams.agent_registry import AgentRegistry
from streams.metrics import EVENTS, PROCESSING
from streams.orchestration.dag import Limits
from streams.orchestration.goal import GOAL_TASK, goal_plan, planned_tasks
from streams.orchestration.plan import Plan, PlanError, PlannedTask, validate_plan
from streams.orchestration.state import PERMANENT_ERRORS, Actions, ProjectState, RetryPolicy
from streams.processors.common import dead_letter, raw_topic, send
from streams.runtime import Runtime

NAME = "orchestrator"
POLICY = RetryPolicy()
_rng = random.Random()  # noqa: S311 - retry jitter, not security


_SEP = "\x1f"  # unit separator: cannot appear in ids (plan ids are [A-Za-z0-9._:-])


def standalone_key(project: str, task_id: str) -> str:
    return f"{project}{_SEP}{task_id}"


def _final_id(project: str, task_id: str, what: str) -> str:
    # Deterministic ids: a reprocessed input re-emits the same events, which stores dedup. Plan
    # task ids are only unique within their project.
    return uuid.uuid5(uuid.NAMESPACE_URL, f"aios:{project}:{task_id}:{what}").hex


def final_result(project: str, f: Any, attempt: dict[str, Any] | None, trace_id: str,
                 submitted_ms: int) -> dict[str, Any]:
    base = dict(attempt) if attempt is not None else {
        "agent_id": NAME, "provider": "", "model": "", "input_tokens": 0, "output_tokens": 0,
        "cost_usd": 0.0, "latency_ms": 0.0, "output": f.output, "submitted_at": submitted_ms}
    base.update({
        "event_id": _final_id(project, f.task_id, "final"), "timestamp": now_ms(), "trace_id": trace_id,
        "task_id": f.task_id, "project_id": project, "role": f.role, "attempt": f.attempt,
        "status": f.status, "error": f.error,
    })
    if f.status != "succeeded":
        base["output"] = ""  # the error says what happened; a failed attempt's partial text is not a result
    return base


def _privacy(value: str | None) -> Literal["normal", "restricted"]:
    # Fail closed: anything but "normal" (a typo included) keeps the task on local models.
    return "normal" if value in (None, "normal") else "restricted"


class Batch:
    """The state changes of a batch of inputs, recorded only after their effects are durable.

    Effects before state: if the process dies after the events went out but before the table
    changelog did, the replayed inputs find the old state and emit the same events again (same
    ids; the results committer drops the repeats). The other order could lose a result, or leave
    a task recorded as dispatched whose assignment never reached its role topic.
    """

    def __init__(self) -> None:
        self.states: dict[str, tuple[ProjectState | None, int]] = {}  # key -> (state or deleted, partition)
        self.effects: list[Awaitable[Any]] = []
        self.statuses: dict[str, tuple[ProjectState, str]] = {}  # project -> (its state, a trace id)

    def put(self, key: str, state: ProjectState | None, partition: int) -> None:
        self.states[key] = (state, partition)

    async def commit(self, table: Any, decoded: dict[str, tuple[dict[str, Any], ProjectState]]) -> None:
        if self.effects:
            await asyncio.gather(*self.effects)
        for key, (state, partition) in self.states.items():
            # Explicit partitions: the changelog partition must match the input's (co-partitioning),
            # and after a batch faust's "current event" no longer says which one that was.
            if state is None:
                decoded.pop(key, None)
                if table.data.pop(key, None) is not None:
                    table.send_changelog(partition, key, None, value_serializer="raw")
            else:
                value = state.to_dict()
                table.data[key] = value
                decoded[key] = (value, state)
                table.send_changelog(partition, key, value)


class Orchestrator:
    """Turns one decoded input into state changes and output events."""

    def __init__(self, app: faust.App, rt: Runtime, table: Any, registry: AgentRegistry) -> None:
        self.app, self.rt, self.table, self.registry = app, rt, table, registry
        s = rt.settings
        self.limits = Limits(per_project=s.project_concurrency, per_role=dict(s.role_concurrency))
        self.roles = set(rt.settings.roles)
        self.requested: dict[str, int] = {}  # table key -> retry time already requested by the timer
        # Table key -> its earliest pending retry. The timer reads this, not the whole table
        # (decoding every entry four times a second was the orchestrator's main cost under load);
        # a full scan still runs at start and every 30 s, for partitions gained in a rebalance.
        self.due: dict[str, int] = {}
        self.last_scan_ms = 0
        self.decoded: dict[str, tuple[dict[str, Any], ProjectState]] = {}  # key -> (table dict, its state)

    def load(self, key: str, batch: Batch) -> ProjectState | None:
        if key in batch.states:
            return batch.states[key][0]
        raw = self.table.data.get(key)
        if not raw:
            return None
        # Decoding a 1,000-task state for every batch was a fifth of the orchestrator's time. The
        # cached object is used only while the table still holds the very dict it was made from
        # (a changelog recovery after a rebalance replaces the dict, and so the cache entry).
        # A batch mutates the object it loads; if the batch fails, the whole cache is dropped.
        cached = self.decoded.get(key)
        if cached is not None and cached[0] is raw:
            return cached[1]
        state = ProjectState.from_dict(raw)
        self.decoded[key] = (raw, state)
        return state

    def key_for(self, project: str, task_id: str | None, batch: Batch) -> str:
        """A standalone task (no plan, no dependencies) has its own entry, removed when it finishes.

        Writes follow the input event's partition, and every input is keyed by project_id, so
        both kinds of entry stay co-partitioned with the project's events.
        """
        if task_id is not None:
            own = standalone_key(project, task_id)
            known = batch.states[own][0] is not None if own in batch.states else own in self.table.data
            if known:
                return own
        return project

    async def handle(self, name: str, v: dict[str, Any], message: Any, batch: Batch) -> None:
        project = v["project_id"]
        now = now_ms()
        task_id = v.get("task_id")
        if name == "Task" and not v["depends_on"]:
            key = standalone_key(project, task_id or "")
        else:
            key = self.key_for(project, task_id, batch)
        state = self.load(key, batch)
        attempt_event: dict[str, Any] | None = None
        if name == "ProjectPlan":
            if state is not None:
                await dead_letter(self.app, self.rt, message, NAME,
                                  PlanError([f"project {project!r} already exists; plans are submitted once"]))
                return
            from_goal = bool(v["goal"]) and not v["tasks"]
            try:
                if from_goal:
                    plan = goal_plan(project, v["goal"], v["budget_usd"], self.roles)
                else:
                    plan = Plan(project=project, budget_usd=v["budget_usd"], tasks=tuple(
                        PlannedTask(id=t["task_id"], role=t["role"], description=t["description"],
                                    depends_on=tuple(t["depends_on"]), priority=t["priority"],
                                    acceptance=t["acceptance"], requires_approval=t["requires_approval"],
                                    privacy=_privacy(t.get("privacy")))
                        for t in v["tasks"]))
                validate_plan(plan, self.roles)
            except (PlanError, ValueError) as exc:
                await dead_letter(self.app, self.rt, message, NAME, exc)
                return
            state = ProjectState.from_plan(plan, now_ms=to_ms(v["timestamp"]))
            state.goal = from_goal
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
            else:
                actions = state.add_task(task, submitted_ms=submitted)
        elif name == "TaskResult":
            if state is None:
                return  # an attempt for a project we never saw (e.g. another deployment's)
            attempt_event = v
            ok, error, expansion = v["status"] == "succeeded", v["error"], None
            if ok and state.goal and v["task_id"] == GOAL_TASK:
                try:
                    expansion = planned_tasks(project, state.dag.nodes[GOAL_TASK].description, v["output"],
                                              self.roles)
                except PlanError as exc:  # a failed attempt: the planner gets another go
                    ok, error = False, f"the planner's plan is invalid: {exc}"
            actions = state.on_attempt(v["task_id"], v["attempt"], ok, v["output"], error, v["cost_usd"],
                                       now_ms=now, policy=POLICY, rng=_rng,
                                       retryable=v["error_type"] not in PERMANENT_ERRORS)
            if expansion and any(f.task_id == GOAL_TASK and f.status == "succeeded" for f in actions.finals):
                state.extend(expansion, now_ms=now)
        else:  # Control
            if state is None:
                return
            action = v["action"]
            if action == "cancel":
                actions = state.cancel(task_id, v["reason"] or "cancelled")
            elif action == "approve" and task_id:
                actions = state.approve(task_id)
            elif action == "reject" and task_id:
                actions = state.reject(task_id, v["reason"] or "rejected")
            else:
                actions = Actions()  # retry_due: release whatever is due below
                self.requested.pop(key, None)
        dispatches = state.dispatchable(now_ms=now, limits=self.limits)
        await self.emit(project, state, actions, dispatches, attempt_event, v["trace_id"], message, batch,
                        with_status=key == project)
        state.archive_finished_standalone()
        # A finished standalone task leaves nothing behind.
        batch.put(key, None if key != project and state.dag.done else state, int(message.partition))
        retry = state.next_retry_ms()
        if retry is None:
            self.due.pop(key, None)
        else:
            self.due[key] = retry

    async def emit(self, project: str, state: ProjectState, actions: Actions, dispatches: list[Any],
                   attempt_event: dict[str, Any] | None, trace_id: str, message: Any, batch: Batch, *,
                   with_status: bool) -> None:
        t = self.rt.topics
        for f in actions.finals:
            attempt = attempt_event if attempt_event is not None and attempt_event["task_id"] == f.task_id else None
            result = final_result(project, f, attempt, trace_id, state.submitted_at.get(f.task_id, state.started_ms))
            batch.effects.append(await send(self.app, self.rt, t.finals, "TaskResult", result, project))
            EVENTS.labels(NAME, f.status).inc()
        for d in dispatches:
            assignment = {
                **envelope(trace_id), "event_id": _final_id(project, d.task_id, f"assign-{d.attempt}"),
                "task_id": d.task_id, "project_id": project, "role": d.role, "description": d.description,
                "attempt": d.attempt, "priority": d.priority, "privacy": d.privacy, "context": d.context,
                "submitted_at": state.submitted_at.get(d.task_id, state.started_ms),
            }
            batch.effects.append(await send(self.app, self.rt, t.role(d.role), "Assignment", assignment, d.task_id))
            EVENTS.labels(NAME, "dispatched").inc()
        for task_id, errors in actions.dead_letters:
            await dead_letter(self.app, self.rt, message, NAME,
                              RuntimeError(f"task {task_id} failed after {len(errors)} attempts"), errors=errors)
        if with_status:  # projects report their status; a standalone task's result says it all
            batch.statuses[project] = (state, trace_id)  # one per project per batch, after its events

    async def emit_statuses(self, batch: Batch) -> None:
        """One status per project the batch touched: computing it (critical path, task list) for
        every event was most of the orchestrator's time on a 1,000-task project."""
        live_roles = self.registry.live_roles()  # roles no live agent serves are named in the status
        for project, (state, trace_id) in batch.statuses.items():
            status = {**envelope(trace_id), **state.status(now_ms=now_ms(), live_roles=live_roles)}
            # Through the committer's outbox: a status never shows results not yet on aios.results.
            batch.effects.append(await send(self.app, self.rt, self.rt.topics.finals, "ProjectStatus", status, project))

    async def request_due_retries(self) -> None:
        """Timer: ask, through the control topic, for each project with a retry that is due."""
        now = now_ms()
        if now - self.last_scan_ms > 30_000:
            self.last_scan_ms = now
            for key, raw in list(self.table.data.items()):
                retry = ProjectState.from_dict(raw).next_retry_ms()
                if retry is not None:
                    self.due[key] = retry
        for key, due in list(self.due.items()):
            if due > now or self.requested.get(key) == due:
                continue
            self.requested[key] = due
            project, _, task_id = key.partition(_SEP)
            control = {**envelope(), "project_id": project, "action": "retry_due", "task_id": task_id or None,
                       "reason": "", "requested_by": NAME}
            await send(self.app, self.rt, self.rt.topics.control, "Control", control, project)


_EXPECTED = {"ProjectPlan", "Task", "TaskResult", "Control"}


def register(app: faust.App, rt: Runtime) -> None:
    # faust's table codec is JSON: keys are project ids, values the state dicts.
    table = app.Table("projects", default=None, partitions=rt.settings.topic_partitions)
    registry = AgentRegistry(rt)
    rt.services.append(registry)
    orch = Orchestrator(app, rt, table, registry)

    async def orchestrate(stream: Any) -> None:
        # One event at a time, not take_events(): take_events acks a batch's events even when the
        # batch is interrupted (a rebalance cancels the actor), which lost tasks in the kill test.
        # With events(), an event is acked only once the loop comes back for the next one.
        async for event in stream.events():
            started = time.perf_counter()
            batch = Batch()
            try:
                try:
                    decoded = rt.codec.decode(event.value)
                    name = decoded.name.rsplit(".", 1)[-1]
                    if name not in _EXPECTED:
                        raise SchemaError(f"the orchestrator does not take {name} events")
                except SchemaError as exc:
                    await dead_letter(app, rt, event.message, NAME, exc)
                    EVENTS.labels(NAME, "dead_letter").inc()
                    continue
                await orch.handle(name, decoded.value, event.message, batch)
                await orch.emit_statuses(batch)
                await batch.commit(table, orch.decoded)
            except BaseException:
                orch.decoded.clear()  # states this event mutated must not outlive it
                raise
            PROCESSING.labels(NAME).observe(time.perf_counter() - started)

    app.agent(raw_topic(app, *rt.topics.orchestrator_inputs()), name=NAME)(orchestrate)
    app.timer(interval=0.25)(orch.request_due_retries)
