"""The ``aios`` command line: local stack, topics, producing and reading events, processors, demo, bench,
the history store and its stats."""

from __future__ import annotations

import click

from aios.cli.agents import agents
from aios.cli.api import api_cmd
from aios.cli.bench import bench
from aios.cli.demo import demo
from aios.cli.dev import dev
from aios.cli.dlq import dlq
from aios.cli.events import submit, tail
from aios.cli.keys import keys
from aios.cli.logs import logs
from aios.cli.memory import memory
from aios.cli.projects import approve, cancel, reject, status
from aios.cli.run import serve, up, worker
from aios.cli.stats import db, stats
from aios.cli.top import top
from aios.cli.topics import topics
from aios.devstack.supervisor import follow_supervisor
from aios.schemas.errors import AiosError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """AIOS: a streaming multi-agent platform on Kafka."""


for command in (api_cmd, keys, dev, topics, submit, tail, up, worker, serve, logs, demo, bench, db, stats, status,
                cancel, approve, reject, memory, agents, top, dlq):
    cli.add_command(command)


def main() -> None:
    follow_supervisor()
    try:
        cli(standalone_mode=True)
    except AiosError as exc:  # a user-facing error: the message says what to do
        raise SystemExit(f"aios: {exc}") from None
