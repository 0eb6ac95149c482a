"""The ``aios`` command line: local stack, topics, producing and reading events, processors, demo, bench,
the history store and its stats."""

from __future__ import annotations

import click

from schemas.errors import AiosError
from streams.cli.agents import agents
from streams.cli.api import api_cmd
from streams.cli.bench import bench
from streams.cli.demo import demo
from streams.cli.dev import dev
from streams.cli.events import submit, tail
from streams.cli.keys import keys
from streams.cli.memory import memory
from streams.cli.projects import approve, cancel, reject, status
from streams.cli.run import up, worker
from streams.cli.stats import db, stats
from streams.cli.topics import topics


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """AIOS: a streaming multi-agent platform on Kafka."""


for command in (api_cmd, keys, dev, topics, submit, tail, up, worker, demo, bench, db, stats, status, cancel, approve,
                reject, memory, agents):
    cli.add_command(command)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except AiosError as exc:  # a user-facing error: the message says what to do
        raise SystemExit(f"aios: {exc}") from None
