"""``aios top``: the operator's live terminal view (textual) of agents, tasks per role, projects,
consumer lag and dead letters, read from the topics (streams.readmodels.top)."""

from __future__ import annotations

import time
from typing import Any

import click

from aios.cli.common import settings_or_exit
from aios.cli.output import emit_json, json_option
from aios.streams.readmodels.top import Snapshot, TopFeed


@click.command()
@click.option("--project", default=None, help="Start filtered to this project (key p cycles projects).")
@click.option("--role", default=None, help="Start filtered to this role (key r cycles roles).")
@click.option("--refresh", default=1.0, show_default=True, type=click.FloatRange(0.2, 60),
              help="Seconds between screen updates.")
@json_option
def top(project: str | None, role: str | None, refresh: float, as_json: bool) -> None:
    """A live view: agents, tasks per role, projects, consumer lag, the last dead letters (q quits).

    Works against `aios up` or distributed workers: everything comes from the topics. With --json,
    one snapshot once the topics are read (after --refresh seconds of live events).
    """
    settings = settings_or_exit()
    feed = TopFeed(settings).start()
    try:
        if as_json:
            emit_json(_snapshot_once(feed, project, role, refresh))
            return
        from aios.cli.top_app import TopApp

        TopApp(feed, project=project, role=role, refresh_s=refresh,
               title=f"aios top · {settings.kafka.topic_prefix} · {settings.kafka.bootstrap}").run()
    finally:
        feed.close()


def _snapshot_once(feed: TopFeed, project: str | None, role: str | None, wait_s: float) -> dict[str, Any]:
    feed.caught_up.wait(15)
    time.sleep(wait_s)
    snap: Snapshot = feed.snapshot(project=project, role=role)
    if snap.error is not None:
        raise click.ClickException(snap.error)
    return snap.to_dict()


