"""Checks shared by the static tests of deployment files (docker-compose.kafka.yml, the Helm chart):
the environment names AIOS reads, and the `aios` commands the CLI really has."""

from __future__ import annotations

from collections.abc import Iterable

import click

from aios.cli import cli
from aios.streams.settings import env_names

# AIOS_* names a deployment file may set before `Settings` reads them. Keep this list short and
# explicit: each entry says why it is allowed. Remove an entry once the field exists (a test
# fails until you do).
PLANNED_AIOS_VARS: dict[str, str] = {}


def assert_real_settings(names: Iterable[tuple[str, str]]) -> None:
    """Fail on any ``(where, NAME)`` whose AIOS_* name neither `Settings` reads nor is planned."""
    known = env_names()
    stale_planned = sorted(set(PLANNED_AIOS_VARS) & known)
    assert not stale_planned, f"{stale_planned} are Settings fields now: drop them from PLANNED_AIOS_VARS"
    unknown = sorted(
        f"{where}: {name}"
        for where, name in names
        if name.upper().startswith("AIOS_") and name.upper() not in known | set(PLANNED_AIOS_VARS)
    )
    assert not unknown, (
        "AIOS_* variables that streams.settings.Settings does not read (typo?):\n  "
        + "\n  ".join(unknown)
        + f"\nknown: {sorted(known)}\nplanned: {sorted(PLANNED_AIOS_VARS)}"
    )


def assert_cli_command(args: list[str], where: str) -> click.Command:
    """Parse ``aios ARGS`` with the CLI's own click tree (arguments and options included, nothing runs)
    and return the command it reaches."""
    command: click.Command = cli
    path = ["aios"]
    rest = list(args)
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        sub = command.get_command(click.Context(command), rest[0])
        assert sub is not None, (
            f"{where}: `{' '.join(path)}` has no command {rest[0]!r}; "
            f"it has {sorted(command.list_commands(click.Context(command)))}"
        )
        path.append(rest.pop(0))
        command = sub
    assert not isinstance(command, click.Group), f"{where}: `{' '.join(path)}` needs a subcommand"
    try:
        command.make_context(" ".join(path), rest)
    except click.UsageError as exc:
        raise AssertionError(f"{where}: `aios {' '.join(args)}` is not a valid command line: {exc}") from exc
    return command
