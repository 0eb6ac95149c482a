"""The ``aios`` commands load on demand (``aios.cli.COMMANDS``): each module must import on its own,
first, in a fresh interpreter. Importing all of them up front had hidden a cycle that only
``aios artifacts`` hit once it loaded alone (agents.tools -> agents.llm -> mcp.config -> agents.tools).
"""

from __future__ import annotations

import subprocess
import sys

import click
import click.testing
import pytest

from aios.cli import COMMANDS, cli

MODULES = sorted({target.split(":")[0] for target in COMMANDS.values()})


def test_every_command_module_imports_first_in_a_fresh_interpreter() -> None:
    # One interpreter per module (an import order is what is under test), all started at once.
    procs = {m: subprocess.Popen([sys.executable, "-c", f"import {m}"], stdout=subprocess.PIPE,  # noqa: S603
                                 stderr=subprocess.PIPE, text=True) for m in MODULES}
    failed = {}
    for module, proc in procs.items():
        _, err = proc.communicate(timeout=120)
        if proc.returncode != 0:
            failed[module] = err.strip().splitlines()[-1:]
    assert not failed, f"these command modules do not import on their own: {failed}"


def test_each_name_loads_the_command_of_that_name() -> None:
    ctx = click.Context(cli)
    assert cli.list_commands(ctx) == sorted(COMMANDS)
    for name in COMMANDS:
        command = cli.get_command(ctx, name)
        assert command is not None and command.name == name


def test_an_unknown_command_is_a_usage_error_that_names_it() -> None:
    result = click.testing.CliRunner().invoke(cli, ["stauts"])
    assert result.exit_code == 2 and "No such command 'stauts'" in result.output


def test_a_wrongly_mapped_name_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(COMMANDS, "not-status", "aios.cli.projects:status")
    monkeypatch.delitem(cli.commands, "not-status", raising=False)
    with pytest.raises(RuntimeError, match="is the command 'status', not 'not-status'"):
        cli.get_command(click.Context(cli), "not-status")
