"""Producing tasks and waiting for their results: what the CLI, the demo, benches and tests share."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aios.schemas.checks import check_control, check_plan, check_task
from aios.schemas.events import envelope, new_id
from aios.streams import tracing
from aios.streams.errors import OrchestrationError
from aios.streams.kafka import EventProducer, TopicReader
from aios.streams.kafka_access import check_access
from aios.streams.orchestration.plan import Plan, plan_record
from aios.streams.sealing import Sealer, unreadable_note
from aios.streams.settings import Settings
from aios.streams.topics import Topics


def build_task(
    description: str,
    *,
    role: str = "general",
    project: str = "default",
    priority: int = 0,
    task_id: str | None = None,
    submitted_by: str = "cli",
    privacy: str = "normal",
) -> dict[str, Any]:
    """A Task event, checked against the limits every entry point shares (InvalidRecordError says
    which field is wrong and what the limit is)."""
    task = {
        **envelope(),
        "task_id": new_id() if task_id is None else task_id,
        "project_id": project,
        "role": role,
        "description": description,
        "priority": priority,
        "depends_on": [],
        "privacy": privacy,  # normal | restricted (local models only); the orchestrator fails closed
        "submitted_by": submitted_by,
        "metadata": {},
    }
    check_task(task)
    return task


@dataclass(frozen=True)
class Delivered:
    """Where a result was read from, and the result itself (its output opened when it was sealed)."""

    partition: int
    offset: int
    result: dict[str, Any]
    sealed: bool = False  # the output is sealed with a key this process does not hold

    @property
    def output(self) -> str:
        """The output to show: the text, or a note saying it is sealed and with which key."""
        return unreadable_note(self.result["output"]) if self.sealed else str(self.result["output"])


class TaskClient:
    """Submit tasks and collect their results from ``aios.results``."""

    def __init__(self, settings: Settings) -> None:
        check_access(settings)  # a refused login or certificate is an error now, not a 5-minute wait
        self.settings = settings
        self.topics = Topics.from_settings(settings)
        tracing.configure(settings, "cli")
        self.producer = EventProducer(settings)
        self.sealer = Sealer.from_settings(settings)  # restricted content is sealed before it is produced
        self._reader: TopicReader | None = None

    def watch_results(self) -> None:
        """Start reading results from now on; call before submitting so none is missed."""
        if self._reader is None:
            self._reader = TopicReader(self.settings, self.topics.results, from_beginning=False,
                                       codec=self.producer.codec)

    def submit(self, task: dict[str, Any], *, flush: bool = True) -> None:
        # Keyed by project: the orchestrator instance that owns the project receives it.
        self._send(self.topics.tasks, "Task", self.sealer.seal_task(task), task["project_id"], flush=flush)

    def _send(self, topic: str, record: str, value: dict[str, Any], key: str, *, flush: bool = True) -> None:
        """Produce (and, with ``flush``, wait for) an event inside its trace's submit span."""
        with tracing.span("submit", value["trace_id"], kind=tracing.SpanKind.PRODUCER,
                          attributes=tracing.submit_attributes(topic, record, value)):
            self.producer.send(topic, record, value, key=key)
            if flush:
                self.producer.flush()

    def submit_plan(self, plan: Plan, *, submitted_by: str = "cli") -> dict[str, Any]:
        """Produce a validated plan as one event: a project is never half-submitted."""
        event = {
            **envelope(), "project_id": plan.project, "goal": "", "budget_usd": plan.budget_usd,
            "submitted_by": submitted_by, **plan_record(plan),
        }
        check_plan(event)
        self._send(self.topics.projects, "ProjectPlan", self.sealer.seal_plan(event), plan.project)
        return event

    def submit_goal(self, project: str, goal: str, *, budget_usd: float | None = None,
                    submitted_by: str = "cli") -> dict[str, Any]:
        """Start a project from a goal: the orchestrator asks the planner role for its plan."""
        event = {**envelope(), "project_id": project, "goal": goal, "budget_usd": budget_usd,
                 "submitted_by": submitted_by, "tasks": []}
        check_plan(event)  # a blank or oversized goal, a project id with '/': said here, not in the DLQ
        self._send(self.topics.projects, "ProjectPlan", event, project)
        return event

    def control(self, project: str, action: str, task_id: str | None = None, reason: str = "") -> None:
        event = {**envelope(), "project_id": project, "action": action, "task_id": task_id,
                 "reason": reason, "requested_by": "cli"}
        check_control(event)
        self.producer.send(self.topics.control, "Control", event, key=project)
        self.producer.flush()

    def wait(self, task_ids: Iterable[str], timeout_s: float, on_result: Any = None) -> dict[str, Delivered]:
        """Block until every task has a result or the timeout passes (then raise, naming them)."""
        if self._reader is None:
            raise OrchestrationError("call watch_results() before submitting, or results may be missed")
        pending = set(task_ids)
        found: dict[str, Delivered] = {}
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            msg = self._reader.poll(min(0.5, max(0.01, deadline - time.monotonic())))
            if msg is None:
                continue
            decoded = self._reader.codec.decode(msg.value(), expect="TaskResult")
            task_id = decoded.value["task_id"]
            if task_id in pending:
                pending.discard(task_id)
                result, sealed = self.sealer.reveal_event("results", decoded.value)
                found[task_id] = Delivered(int(msg.partition() or 0), int(msg.offset() or 0), result, sealed)
                if on_result is not None:
                    on_result(found[task_id])
        if pending:
            raise OrchestrationError(
                f"no result within {timeout_s:.0f}s for {len(pending)} task(s): {', '.join(sorted(pending)[:5])}; "
                "is a processor running? (aios up)"
            )
        return found

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()


TERMINAL_PROJECT_STATES = frozenset({"succeeded", "failed", "cancelled"})


def latest_by(settings: Settings, topic: str, field: str, *, timeout_s: float,
              to_end: bool = False) -> dict[str, dict[str, Any]]:
    """The latest event per ``field`` of a (compacted) topic; ``to_end`` reads what it held when
    opened, for topics that are never silent, else until ``timeout_s`` of silence."""
    reader = TopicReader(settings, topic, from_beginning=True)
    latest: dict[str, dict[str, Any]] = {}
    try:
        events = reader.events_to_end(timeout_s) if to_end else reader.events(timeout_s=timeout_s)
        for msg, decoded in events:
            if msg.value() is None:  # a tombstone: the key is gone
                latest.pop((msg.key() or b"").decode(errors="replace"), None)
            elif not isinstance(decoded, Exception):
                latest[decoded.value[field]] = decoded.value
    finally:
        reader.close()
    return latest


def project_statuses(settings: Settings, *, timeout_s: float = 2.0) -> dict[str, dict[str, Any]]:
    """The latest ProjectStatus of every project, read from the compacted status topic."""
    return latest_by(settings, Topics.from_settings(settings).project_status, "project_id", timeout_s=timeout_s)


def wait_project(settings: Settings, project: str, timeout_s: float,
                 on_status: Any = None) -> dict[str, Any]:
    """Follow the status topic until ``project`` reaches a terminal state; return that status."""
    topics = Topics.from_settings(settings)
    reader = TopicReader(settings, topics.project_status, from_beginning=True)
    deadline = time.monotonic() + timeout_s
    last: dict[str, Any] | None = None
    try:
        while time.monotonic() < deadline:
            msg = reader.poll(0.2)
            if msg is None:
                continue
            status = reader.codec.decode(msg.value(), expect="ProjectStatus").value
            if status["project_id"] != project:
                continue
            last = status
            if on_status is not None:
                on_status(status)
            if status["state"] in TERMINAL_PROJECT_STATES:
                return status
    finally:
        reader.close()
    state = last["state"] if last else "no status yet"
    raise OrchestrationError(f"project {project!r} did not finish within {timeout_s:.0f}s (last state: {state})")
