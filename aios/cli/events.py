"""``aios submit`` and ``aios tail``: producing tasks and reading any topic, decoded."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO

import click

from aios.agents.roles import load_roles
from aios.cli.agents import agent_statuses
from aios.cli.artifacts import result_text
from aios.cli.common import settings_or_exit
from aios.cli.output import console, emit_json, json_option
from aios.schemas.codec import Decoded
from aios.schemas.errors import AiosError, SchemaError
from aios.schemas.events import event_doc
from aios.schemas.limits import MAX_PRIORITY, MIN_PRIORITY
from aios.streams.kafka import TopicReader
from aios.streams.kafka_access import KafkaAccessError
from aios.streams.readmodels.agent_registry import live_roles_of, require_served
from aios.streams.readmodels.task_client import TaskClient, build_task, project_statuses
from aios.streams.settings import Settings
from aios.streams.topics import Topics


@click.command()
@click.argument("text", required=False)
@click.option("--plan", "plan_file", type=click.File("r"), help="Submit a plan (JSON; see the README) instead.")
@click.option("--goal", default=None, help="Start project --project from a goal; the planner role plans it.")
@click.option("--role", default="general", show_default=True, help="Agent role to do the work.")
@click.option("--project", default="default", show_default=True)
@click.option("--priority", default=0, show_default=True, type=click.IntRange(MIN_PRIORITY, MAX_PRIORITY),
              help="Higher runs first among ready tasks.")
@click.option("--privacy", type=click.Choice(["normal", "restricted"]), default="normal", show_default=True,
              help="restricted: only local models see the task.")
@click.option("--wait", is_flag=True, help="Wait for the result (or, with --plan, the final project status).")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait with --wait.")
@click.option("--anyway", is_flag=True,
              help="Submit even when no live agent serves a role it needs (the work waits for one).")
@click.option("--stream", "stream_tokens", is_flag=True,
              help="With --wait: print the answer as the model writes it (live tokens; to stderr with --json).")
@json_option
def submit(text: str | None, plan_file: Any, goal: str | None, role: str, project: str, priority: int,
           privacy: str, wait: bool, timeout: float, anyway: bool, stream_tokens: bool, as_json: bool) -> None:
    """Produce a task, a whole plan, or a goal for the orchestrator (idempotent producer, acks=all).

    The roles it needs are checked against agents/roles.json, and against the live agents on the
    agents topic: a role that no live agent serves is an error (unless --anyway).
    """
    settings = settings_or_exit()
    if sum(x is not None for x in (text, plan_file, goal)) > 1:
        raise click.UsageError("give one of TEXT, --plan or --goal")
    if plan_file is not None:
        _submit_plan(settings, plan_file.read(), wait, timeout, anyway, as_json)
        return
    if goal is not None:
        _submit_goal(settings, project, goal, wait, timeout, anyway, as_json)
        return
    if text is None:
        raise click.UsageError("say what to do: aios submit \"TEXT\" (or --plan plan.json)")
    if stream_tokens and not wait:
        raise click.UsageError("--stream shows the answer while you wait: add --wait")
    client = TaskClient(settings)
    printer: TokenPrinter | None = None
    try:
        task = build_task(text, role=role, project=project, priority=priority, privacy=privacy)
        check_roles(settings, {role}, anyway)
        if wait:
            client.watch_results()
        if stream_tokens:  # listening before the task exists: no token can come first
            printer = TokenPrinter(settings, task["task_id"], sys.stderr if as_json else sys.stdout)
        client.submit(task)
        topic, partition, offset = client.producer.delivered[-1]
        doc: dict[str, Any] = {"task_id": task["task_id"], "trace_id": task["trace_id"], "topic": topic,
                               "partition": partition, "offset": offset}
        if wait:
            delivered = client.wait([task["task_id"]], timeout)[task["task_id"]]
            doc["result"] = event_doc(delivered.result)
            doc["sealed"] = delivered.sealed  # the output stays sealed: this process lacks its key
    except AiosError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        if printer is not None:
            printer.stop()
        client.close()
    if as_json:
        emit_json(doc)
        return
    if printer is None:
        console.print(f"submitted task {task['task_id']} to {topic} [{partition}] @ {offset} (trace {task['trace_id']})")
    if wait:
        r = doc["result"]
        console.print(f"[bold]{r['status']}[/bold] by {r['agent_id']} ({r['provider']}:{r['model']})")
        if printer is None or not printer.printed or r["status"] != "succeeded":
            shown = result_text(settings, delivered.result, delivered.output if r["output"] else "")
            console.print(shown or r["error"] or "", markup=False)


class TokenPrinter:
    """Prints one task's live tokens (``<prefix>.tokens``) as they come, from a thread of its own."""

    def __init__(self, settings: Any, task_id: str, out: TextIO) -> None:
        self.task_id, self.out, self.printed = task_id, out, False
        self._reader = TopicReader(settings, Topics.from_settings(settings).tokens, from_beginning=False)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="aios-tokens", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                msg = self._reader.poll(0.1)
                if msg is None:
                    continue
                try:
                    value = self._reader.codec.decode(msg.value()).value
                except SchemaError:
                    continue
                if value.get("task_id") == self.task_id and value.get("text"):
                    self.out.write(value["text"])
                    self.out.flush()
                    self.printed = True
        finally:
            self._reader.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        if self.printed:
            self.out.write("\n")
            self.out.flush()


def check_roles(settings: Settings, needed: set[str], anyway: bool) -> None:
    """Known roles (agents/roles.json), each served by a live agent (the agents topic) unless ``anyway``."""
    roles = load_roles()
    unknown = sorted(needed - set(roles.names()))
    if unknown:
        raise click.ClickException(f"unknown role {', '.join(map(repr, unknown))}; roles: {', '.join(roles.names())} "
                                   "(agents/roles.json)")
    if not anyway:
        try:
            statuses = agent_statuses(settings, timeout_s=5)
        except KafkaAccessError as exc:  # e.g. a principal that may produce tasks but read nothing
            raise click.ClickException(f"{exc}; or pass --anyway to submit without checking the live agents") from exc
        require_served(needed, live_roles_of(statuses))


def _submit_plan(settings: Any, text: str, wait: bool, timeout: float, anyway: bool, as_json: bool) -> None:
    from aios.streams.orchestration.plan import parse_plan
    from aios.streams.readmodels.task_client import wait_project

    client = TaskClient(settings)
    try:
        plan = parse_plan(text, load_roles().names())  # nothing is produced unless the whole plan is valid
        check_roles(settings, {t.role for t in plan.tasks}, anyway)
        refuse_existing_project(settings, plan.project, 'give the plan another "project"')
        client.submit_plan(plan)
        status = wait_project(settings, plan.project, timeout) if wait else None
    except AiosError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        client.close()
    _report_project({"project": plan.project, "tasks": [t.id for t in plan.tasks]}, status, as_json,
                    f"submitted project {plan.project} with {len(plan.tasks)} tasks")


def _submit_goal(settings: Any, project: str, goal: str, wait: bool, timeout: float, anyway: bool,
                 as_json: bool) -> None:
    from aios.streams.orchestration.goal import PLANNER_ROLE
    from aios.streams.readmodels.task_client import wait_project

    client = TaskClient(settings)
    try:
        check_roles(settings, {PLANNER_ROLE}, anyway)  # a live planner must plan it: say so before producing
        refuse_existing_project(settings, project, "give the goal another --project")
        client.submit_goal(project, goal)
        status = wait_project(settings, project, timeout) if wait else None
    except AiosError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        client.close()
    _report_project({"project": project, "goal": goal}, status, as_json,
                    f"submitted goal for project {project}: the planner role plans it")


def refuse_existing_project(settings: Settings, project: str, fix: str) -> None:
    """A plan or a goal starts a project once. The orchestrator dead-letters a second one, and
    --wait would read the first one's final status as if it were the answer: say so before producing."""
    existing = project_statuses(settings).get(project)
    if existing is not None:
        raise click.ClickException(f"project {project!r} already exists ({existing['state']}); a plan or a goal "
                                   f"starts a project once: {fix}")


def _report_project(doc: dict[str, Any], status: dict[str, Any] | None, as_json: bool, line: str) -> None:
    """What a plan or goal submission prints: the submission, and the final status when waited for."""
    if status is not None:
        doc["status"] = event_doc(status)
    if as_json:
        emit_json(doc)
        return
    console.print(line)
    if status is not None:
        console.print(f"{status['state']}: {status['counts']}")


def _line(topic: str, partition: int, offset: int, event: Decoded) -> str:
    v = event.value
    name = event.name.rsplit(".", 1)[-1]
    keys = ("task_id", "project_id", "role", "status", "state", "memory_id", "provider", "error")
    fields = " ".join(f"{k}={v[k]}" for k in keys if v.get(k) not in (None, ""))
    return f"{topic}[{partition}]@{offset} {name} {fields}"


@click.command()
@click.argument("topic")
@click.option("--from-beginning", is_flag=True, help="Start at the oldest event instead of now.")
@click.option("--limit", type=int, default=None, help="Stop after N events.")
@click.option("--timeout", type=float, default=10.0, show_default=True,
              help="Stop after this many seconds without an event.")
@click.option("--follow", is_flag=True, help="Never stop on silence (Ctrl-C ends).")
@json_option
def tail(topic: str, from_beginning: bool, limit: int | None, timeout: float, follow: bool, as_json: bool) -> None:
    """Decode and print the events of TOPIC (full name, or short: tasks, results, dlq, agent.<role>...)."""
    settings = settings_or_exit()
    topics = Topics.from_settings(settings)
    name = topic if topic.startswith(f"{topics.prefix}.") else f"{topics.prefix}.{topic}"
    events: list[dict[str, Any]] = []
    try:
        reader = TopicReader(settings, name, from_beginning=from_beginning)
    except AiosError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        last = time.monotonic()
        while (limit is None or len(events) < limit) and (follow or time.monotonic() - last < timeout):
            msg = reader.poll(0.2)
            if msg is None:
                continue
            last = time.monotonic()
            if msg.value() is None:  # a compacted topic's tombstone: its key is deleted
                key = (msg.key() or b"").decode(errors="replace")
                doc = {"topic": name, "partition": msg.partition(), "offset": msg.offset(), "type": "tombstone",
                       "key": key}
                if not as_json:
                    console.print(f"{name}[{msg.partition()}]@{msg.offset()} tombstone key={key}", markup=False)
                events.append(doc)
                continue
            try:
                decoded = reader.codec.decode(msg.value())
                doc = {"topic": name, "partition": msg.partition(), "offset": msg.offset(),
                       "type": decoded.name.rsplit(".", 1)[-1], "event": event_doc(decoded.value)}
                if not as_json:
                    console.print(_line(name, int(msg.partition() or 0), int(msg.offset() or 0), decoded), markup=False)
            except AiosError as exc:
                doc = {"topic": name, "partition": msg.partition(), "offset": msg.offset(),
                       "type": "undecodable", "error": str(exc)}
                if not as_json:
                    console.print(f"{name}[{msg.partition()}]@{msg.offset()} UNDECODABLE {exc}", markup=False)
            events.append(doc)
    except KeyboardInterrupt:
        pass
    finally:
        reader.close()
    if as_json:
        emit_json({"topic": name, "count": len(events), "events": events})
