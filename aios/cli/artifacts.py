"""``aios artifacts list|get``: the files agents wrote, from the artifact store the settings name
(AIOS_ARTIFACTS_URL, else ``<AIOS_DATA_DIR>/artifacts``)."""

from __future__ import annotations

import asyncio
import hashlib
import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from aios.cli.common import settings_or_exit
from aios.cli.output import console, emit_json, json_option
from aios.connectors.artifacts import ArtifactStore
from aios.schemas.artifacts import project_prefix
from aios.schemas.errors import AiosError
from aios.schemas.limits import MAX_ID_CHARS, is_id
from aios.streams.artifacts import open_artifact_store, whole_output
from aios.streams.settings import Settings

MAX_LISTED = 10_000


@click.group()
def artifacts() -> None:
    """Files agents wrote (write_artifact) and outputs too large for an event, in the artifact store."""


@artifacts.command("list")
@click.option("--project", "-p", required=True, help="The project whose artifacts to list.")
@click.option("--task", "-t", default=None, help="Only this task's artifacts.")
@click.option("--limit", default=200, show_default=True, type=click.IntRange(1, MAX_LISTED))
@json_option
def list_cmd(project: str, task: str | None, limit: int, as_json: bool) -> None:
    """A project's artifacts, by path (<task>/<attempt>/<name>), with sizes and URIs."""
    settings = settings_or_exit()
    _check_id("--project", project)
    if task is not None:
        _check_id("--task", task)
    store = _store(settings)
    base = project_prefix(project)
    try:
        found = asyncio.run(store.list_prefix(project_prefix(project, task), limit))
    except AiosError as exc:
        raise click.ClickException(str(exc)) from exc
    rows: list[dict[str, Any]] = [{"path": o.key[len(base):], "size": o.size, "uri": o.uri} for o in found]
    if as_json:
        emit_json({"project_id": project, "artifacts": rows})
        return
    if not rows:
        console.print(f"no artifacts in project {project}" + (f" for task {task}" if task else ""))
        return
    table = Table("path", "bytes", "uri")
    for row in rows:
        table.add_row(row["path"], str(row["size"]), row["uri"])
    console.print(table)


@artifacts.command("get")
@click.argument("where", metavar="PATH|URI")
@click.option("--project", "-p", default=None, help="The project of PATH (<task>/<attempt>/<name>); not for a URI.")
@click.option("--output", "-o", "out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the artifact to this file instead of standard output.")
@json_option
def get_cmd(where: str, project: str | None, out: Path | None, as_json: bool) -> None:
    """One artifact's bytes, by its path in a project or by the URI a result carries."""
    settings = settings_or_exit()
    store = _store(settings)
    if "://" in where:
        key = store.key_of(where)
        if key is None:
            raise click.ClickException(f"{where} is not in this deployment's artifact store ({store.uri('')}); "
                                       "check AIOS_ARTIFACTS_URL")
    else:
        if project is None:
            raise click.UsageError("give --project for a path, or pass the artifact's URI")
        _check_id("--project", project)
        key = project_prefix(project) + where.lstrip("/")
    try:
        data = asyncio.run(store.read(key))
    except AiosError as exc:
        raise click.ClickException(str(exc)) from exc
    doc: dict[str, Any] = {"uri": store.uri(key), "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    if out is not None:
        out.write_bytes(data)
        doc["written_to"] = str(out)
    if as_json:
        if out is None:
            doc["content"] = data.decode("utf-8", "replace")
        emit_json(doc)
    elif out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        console.print(f"wrote {len(data)} bytes (sha256 {doc['sha256']}) to {out}")


def result_text(settings: Settings, result: dict[str, Any], shown: str) -> str:
    """What ``aios submit --wait`` prints for a result: the whole output when the event carries an
    excerpt of one kept in the artifact store, else ``shown``."""
    if not shown or result.get("status") != "succeeded" or not result.get("artifacts"):
        return shown
    try:
        return asyncio.run(whole_output(_store(settings), result))
    except AiosError as exc:
        return f"{shown}\n(the whole output could not be read: {exc})"


def _store(settings: Settings) -> ArtifactStore:
    try:
        return open_artifact_store(settings)
    except AiosError as exc:
        raise click.ClickException(str(exc)) from exc


def _check_id(option: str, value: str) -> None:
    if not is_id(value):
        raise click.BadParameter(f"{value!r} is not an id (1-{MAX_ID_CHARS} of A-Z a-z 0-9 . _ : -)",
                                 param_hint=option)
