"""``aios topics create|list``."""

from __future__ import annotations

import dataclasses

import click
from rich.table import Table

from aios.cli.common import settings_or_exit
from aios.cli.output import console, emit_json, json_option
from aios.schemas.errors import AiosError
from aios.streams.topics import create_topics, list_topics


@click.group()
def topics() -> None:
    """Create and inspect the AIOS topics."""


@topics.command("create")
@json_option
def create(as_json: bool) -> None:
    """Create every topic explicitly (idempotent: existing topics are left alone)."""
    settings = settings_or_exit()
    try:
        outcomes = create_topics(settings)
    except AiosError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        emit_json({"topics": [dataclasses.asdict(o) for o in outcomes]})
        return
    table = Table("topic", "outcome", "partitions", "note")
    for o in outcomes:
        table.add_row(o.name, o.outcome, str(o.partitions), o.detail)
    console.print(table)


@topics.command("list")
@json_option
def list_(as_json: bool) -> None:
    """Show the AIOS topics with partitions, replication, cleanup policy and retention."""
    settings = settings_or_exit()
    try:
        infos = list_topics(settings)
    except AiosError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        emit_json({"topics": [dataclasses.asdict(i) for i in infos]})
        return
    table = Table("topic", "record", "partitions", "replication", "cleanup", "retention.ms")
    for i in infos:
        table.add_row(i.name, i.record, str(i.partitions), str(i.replication), i.cleanup_policy, i.retention_ms)
    console.print(table)
    if not infos:
        console.print("no AIOS topics yet: run `aios topics create`")
