"""The ``aios`` command line: local stack, topics, producing and reading events, processors, demo, bench,
the history store and its stats."""

from __future__ import annotations

import importlib

import click

from aios.devstack.parent import follow_supervisor
from aios.schemas.errors import AiosError

# Each command, by the module that defines it. A command's module is imported when the command
# runs (or its help is shown), so `aios status` does not load the workers' stream engine: every
# command paid ~1 s of imports when this package imported all of them up front.
COMMANDS = {
    "agents": "aios.cli.agents:agents", "api": "aios.cli.api:api_cmd", "approve": "aios.cli.projects:approve",
    "artifacts": "aios.cli.artifacts:artifacts", "bench": "aios.cli.bench:bench", "cancel": "aios.cli.projects:cancel",
    "db": "aios.cli.stats:db", "demo": "aios.cli.demo:demo", "dev": "aios.cli.dev:dev", "dlq": "aios.cli.dlq:dlq",
    "drain": "aios.cli.broadcast:drain", "keys": "aios.cli.keys:keys", "logs": "aios.cli.logs:logs",
    "memory": "aios.cli.memory:memory", "reject": "aios.cli.projects:reject", "reload": "aios.cli.broadcast:reload",
    "serve": "aios.cli.run:serve", "stats": "aios.cli.stats:stats", "status": "aios.cli.projects:status",
    "submit": "aios.cli.events:submit", "tail": "aios.cli.events:tail", "tools": "aios.cli.tools:tools",
    "top": "aios.cli.top:top", "topics": "aios.cli.topics:topics", "trace": "aios.cli.trace:trace_cmd",
    "up": "aios.cli.run:up", "worker": "aios.cli.run:worker",
}


class LazyGroup(click.Group):
    """A group whose commands (``COMMANDS``) are imported on first use."""

    def list_commands(self, ctx: click.Context | None) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context | None, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, attr = COMMANDS[cmd_name].split(":")
            command = getattr(importlib.import_module(module), attr)
            if command.name != cmd_name:
                raise RuntimeError(f"{COMMANDS[cmd_name]} is the command {command.name!r}, not {cmd_name!r}")
            self.add_command(command)
        return self.commands.get(cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """AIOS: a streaming multi-agent platform on Kafka."""


def main() -> None:
    follow_supervisor()
    try:
        cli(standalone_mode=True)
    except AiosError as exc:  # a user-facing error: the message says what to do
        raise SystemExit(f"aios: {exc}") from None
