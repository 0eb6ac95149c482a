"""``aios topics create|list``."""

from __future__ import annotations

import dataclasses

import click
from rich.table import Table

from aios.cli.common import settings_or_exit
from aios.cli.output import console, emit_json, json_option
from aios.schemas.errors import AiosError
from aios.streams.topics import create_topics_for_cluster, list_topics


@click.group()
def topics() -> None:
    """Create and inspect the AIOS topics."""


@topics.command("create")
@json_option
def create(as_json: bool) -> None:
    """Create every topic explicitly (idempotent: existing topics are left alone).

    Replication follows the cluster unless set: 3 copies and min.insync.replicas 2 with three brokers
    or more, one copy per broker below that. It says what it chose.
    """
    settings = settings_or_exit()
    try:
        created = create_topics_for_cluster(settings)
    except AiosError as exc:
        raise click.ClickException(str(exc)) from exc
    plan = created.replication
    if as_json:
        emit_json({"brokers": plan.brokers, "replication": plan.factor, "min_insync_replicas": plan.min_insync,
                   "replication_from": plan.source, "topics": [dataclasses.asdict(o) for o in created.topics]})
        return
    table = Table("topic", "outcome", "partitions", "replication", "note")
    for o in created.topics:
        table.add_row(o.name, o.outcome, str(o.partitions), str(o.replication), o.detail)
    console.print(table)
    why = ("from the cluster's broker count" if plan.source == "cluster"
           else "from AIOS_TOPIC_REPLICATION / AIOS_TOPIC_MIN_INSYNC_REPLICAS")
    console.print(f"{plan.brokers} broker{'s' if plan.brokers != 1 else ''} up: new topics get replication factor "
                  f"{plan.factor} and min.insync.replicas {plan.min_insync} ({why})")


@topics.command("list")
@json_option
def list_(as_json: bool) -> None:
    """Show the AIOS topics with partitions, replication, min ISR, cleanup policy and retention."""
    settings = settings_or_exit()
    try:
        infos = list_topics(settings)
    except AiosError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        emit_json({"topics": [dataclasses.asdict(i) for i in infos]})
        return
    table = Table("topic", "record", "partitions", "replication", "min ISR", "cleanup", "retention.ms")
    for i in infos:
        table.add_row(i.name, i.record, str(i.partitions), str(i.replication), i.min_insync_replicas,
                      i.cleanup_policy, i.retention_ms)
    console.print(table)
    if not infos:
        console.print("no AIOS topics yet: run `aios topics create`")
