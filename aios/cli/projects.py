"""``aios status``, ``aios cancel``, ``aios approve`` and ``aios reject``: projects and their tasks."""

from __future__ import annotations

from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from aios.cli.common import settings_or_exit
from aios.cli.output import console, emit_json, json_option, utc_time
from aios.schemas.errors import AiosError
from aios.schemas.events import event_doc, to_ms
from aios.streams.readmodels.task_client import TaskClient, project_statuses
from aios.streams.settings import Settings


def _resolve(settings: Settings, ident: str, project: str | None = None) -> tuple[str, str | None, dict[str, Any]]:
    """A project id, or a task id looked up in the projects' latest statuses (in ``project`` only,
    when given: task and milestone ids repeat across projects)."""
    statuses = project_statuses(settings)
    if ident in statuses and project is None:
        return ident, None, statuses[ident]
    candidates = statuses if project is None else {project: statuses[project]} if project in statuses else {}
    for name, status in candidates.items():
        # A sprint's milestone id stands for the sprint (approve or reject it at its boundary).
        if any(t["task_id"] == ident for t in status["tasks"]) or any(
                sp["id"] == ident for sp in status.get("sprints", ())):
            return name, ident, status
    where = f" in project {project!r}" if project else ""
    raise click.ClickException(f"no project or task {ident!r} is known to the orchestrator{where} "
                               "(aios status lists them)")


@click.command()
@click.argument("project", required=False)
@json_option
def status(project: str | None, as_json: bool) -> None:
    """A project's progress: counts by state, percent done, critical path, cost, elapsed time; for a
    plan in sprints, each sprint's estimates against actuals and what each re-plan changed."""
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
    show_status(project, s)


def show_status(project: str, s: dict[str, Any]) -> None:
    """A project's status as `aios status PROJECT` prints it."""
    console.print(f"[bold]{project}[/bold]: {s['state']}, {s['percent_done']:.0f}% done, "
                  f"${s['cost_usd']:.4f} spent, {s['elapsed_ms'] / 1000:.1f}s elapsed "
                  f"(since {utc_time(to_ms(s['started_at']))} UTC)")
    console.print("counts: " + ", ".join(f"{k} {v}" for k, v in s["counts"].items() if v))
    console.print("critical path: " + (" -> ".join(s["critical_path"]) or "(done)"))
    for note in s["notes"]:
        console.print(f"[yellow]note[/yellow]: {note}")
    if s.get("sprints"):
        _print_sprints(s)
        return
    table = Table("task", "role", "state", "attempts", "reason")
    for t in s["tasks"]:
        table.add_row(t["task_id"], t["role"], t["state"], str(t["attempts"]), t["reason"])
    console.print(table)


def _vs(entry: dict[str, Any], what: str) -> str:
    """An estimate against its actual, e.g. "300 / 412"; "-" where no estimate was given."""
    estimate, actual = {"tokens": (entry.get("estimate_tokens", 0), entry.get("tokens", 0)),
                        "seconds": (entry.get("estimate_seconds", 0.0), entry.get("seconds", 0.0)),
                        "usd": (entry.get("estimate_usd", 0.0), entry.get("cost_usd", 0.0))}[what]
    return f"{_number(what, estimate) if estimate else '-'} / {_number(what, actual)}"


def _number(what: str, value: float) -> str:
    return f"{int(value)}" if what == "tokens" else f"{value:.1f}s" if what == "seconds" else f"${value:.4f}"


def _line(text: str, width: int = 60) -> str:
    """The first line of ``text``, within ``width``: a table cell, not the whole answer."""
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    # Escaped: model text such as "[offline provider ...]" is not rich markup.
    return escape(first if len(first) <= width else first[: width - 1] + "…")


def _print_sprints(s: dict[str, Any]) -> None:
    """Sprints with estimates against actuals, each re-plan's changes, then the tasks by sprint."""
    table = Table("sprint", "state", "done", "tokens est/act", "time est/act", "cost est/act", title="sprints")
    for sp in s["sprints"]:
        table.add_row(f"{sp['id']} {sp['title']}".strip(), sp["state"], f"{sp['finished']}/{sp['tasks']}",
                      _vs(sp, "tokens"), _vs(sp, "seconds"), _vs(sp, "usd"))
    console.print(table)
    for sp in s["sprints"]:
        if sp["review"]:
            console.print(f"review of {sp['id']}: {_line(sp['review'], 100)}", highlight=False)
    for r in s.get("replans") or []:
        if r["state"] == "failed":
            console.print(f"re-plan after {r['after']}: [red]failed[/red]: {r['error']}", highlight=False)
            continue
        counts = r.get("counts") or {}
        parts = [f"{kind} {counts.get(kind, len(r[kind]))} ({', '.join(r[kind]) or '-'})"
                 for kind in ("added", "removed", "changed")]
        summary = f": {_line(r['summary'], 80)}" if r["summary"] else ""
        console.print(f"re-plan after {r['after']}: {'; '.join(parts)}{summary}", highlight=False)
    table = Table("task", "sprint", "role", "state", "tries", "tokens est/act", "cost est/act", "review / reason")
    order = {sp["id"]: i for i, sp in enumerate(s["sprints"], start=1)}
    # By sprint, each sprint's review and re-plan after its work (their ids end so: plan.py).
    for t in sorted(s["tasks"], key=lambda t: (order.get(t.get("milestone", ""), 0), t["task_id"].endswith(
            (":review", ":replan")), t["task_id"].endswith(":replan"))):
        table.add_row(t["task_id"], t.get("milestone", ""), t["role"], t["state"], str(t["attempts"]),
                      _vs(t, "tokens"), _vs(t, "usd"), _line(t.get("review") or t["reason"], 40))
    console.print(table)


def _control(action: str, ident: str, reason: str, as_json: bool, *, needs_task: bool,
             in_project: str | None = None) -> None:
    settings = settings_or_exit()
    try:
        project, task_id, _ = _resolve(settings, ident, in_project)
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


PROJECT_OPTION = click.option("--project", default=None, help="The task's project, where ids repeat across projects.")


@click.command()
@click.argument("task")
@PROJECT_OPTION
@json_option
def approve(task: str, project: str | None, as_json: bool) -> None:
    """Let a task, or a sprint (by its milestone id), that waits in awaiting_approval run."""
    _control("approve", task, "", as_json, needs_task=True, in_project=project)


@click.command()
@click.argument("task")
@click.option("--reason", required=True, help="Why: it is recorded as the task's failure.")
@PROJECT_OPTION
@json_option
def reject(task: str, reason: str, project: str | None, as_json: bool) -> None:
    """Fail a task that waits for approval (its dependents are skipped), or reject a sprint that has
    not opened (by its milestone id: its tasks and every later sprint's are cancelled)."""
    _control("reject", task, reason, as_json, needs_task=True, in_project=project)
