"""``aios status``, ``aios cancel``, ``aios approve`` and ``aios reject``: projects and their tasks."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from aios.cli.common import settings_or_exit
from aios.cli.output import console, emit_json, json_option
from aios.schemas.errors import AiosError
from aios.schemas.events import event_doc, to_ms
from aios.streams.readmodels.task_client import TaskClient, project_statuses
from aios.streams.settings import Settings


def _resolve(settings: Settings, ident: str) -> tuple[str, str | None, dict[str, Any]]:
    """A project id, or a task id looked up in the projects' latest statuses."""
    statuses = project_statuses(settings)
    if ident in statuses:
        return ident, None, statuses[ident]
    for project, status in statuses.items():
        if any(t["task_id"] == ident for t in status["tasks"]):
            return project, ident, status
    raise click.ClickException(f"no project or task {ident!r} is known to the orchestrator (aios status lists them)")


@click.command()
@click.argument("project", required=False)
@json_option
def status(project: str | None, as_json: bool) -> None:
    """A project's progress: counts by state, percent done, critical path, cost, elapsed time."""
    settings = settings_or_exit()
    try:
        statuses = project_statuses(settings)
    except AiosError as exc:
        raise click.ClickException(str(exc)) from exc
    if project is None:
        doc: Any = {"projects": [{"project_id": p, "state": s["state"], "percent_done": s["percent_done"]}
                                 for p, s in sorted(statuses.items())]}
        if as_json:
            emit_json(doc)
            return
        for p in doc["projects"]:
            console.print(f"{p['project_id']}: {p['state']} ({p['percent_done']:.0f}%)")
        return
    if project not in statuses:
        raise click.ClickException(f"no status for project {project!r} yet")
    s = statuses[project]
    if as_json:
        emit_json(event_doc(s))
        return
    console.print(f"[bold]{project}[/bold]: {s['state']}, {s['percent_done']:.0f}% done, "
                  f"${s['cost_usd']:.4f} spent, {s['elapsed_ms'] / 1000:.1f}s elapsed "
                  f"(since {to_ms(s['started_at'])})")
    console.print("counts: " + ", ".join(f"{k} {v}" for k, v in s["counts"].items() if v))
    console.print("critical path: " + (" -> ".join(s["critical_path"]) or "(done)"))
    for note in s["notes"]:
        console.print(f"[yellow]note[/yellow]: {note}")
    table = Table("task", "role", "state", "attempts", "reason")
    for t in s["tasks"]:
        table.add_row(t["task_id"], t["role"], t["state"], str(t["attempts"]), t["reason"])
    console.print(table)


def _control(action: str, ident: str, reason: str, as_json: bool, *, needs_task: bool) -> None:
    settings = settings_or_exit()
    try:
        project, task_id, _ = _resolve(settings, ident)
        if needs_task and task_id is None:
            raise click.ClickException(f"{action} takes a task id, and {ident!r} is a project")
        client = TaskClient(settings)
        try:
            client.control(project, action, task_id, reason)
        finally:
            client.close()
    except AiosError as exc:
        raise click.ClickException(str(exc)) from exc
    doc = {"project": project, "task": task_id, "action": action}
    if as_json:
        emit_json(doc)
    else:
        console.print(f"{action} sent for {task_id or 'project'} in {project}")


@click.command()
@click.argument("ident", metavar="TASK|PROJECT")
@click.option("--reason", default="cancelled by the operator", show_default=True)
@json_option
def cancel(ident: str, reason: str, as_json: bool) -> None:
    """Cancel a task (its dependents follow) or a whole project."""
    _control("cancel", ident, reason, as_json, needs_task=False)


@click.command()
@click.argument("task")
@json_option
def approve(task: str, as_json: bool) -> None:
    """Let a task that waits in awaiting_approval run."""
    _control("approve", task, "", as_json, needs_task=True)


@click.command()
@click.argument("task")
@click.option("--reason", required=True, help="Why: it is recorded as the task's failure.")
@json_option
def reject(task: str, reason: str, as_json: bool) -> None:
    """Fail a task that waits for approval; its dependents are skipped."""
    _control("reject", task, reason, as_json, needs_task=True)
