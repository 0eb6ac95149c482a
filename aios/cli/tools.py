"""``aios tools``: the tools each role's agents are offered, fetched as a worker fetches them at start."""

from __future__ import annotations

import asyncio
from typing import Any

import click
from rich.table import Table

from aios.cli.common import settings_or_exit
from aios.cli.output import console, emit_json, json_option
from aios.schemas.errors import AiosError
from aios.streams.engine.runtime import Runtime
from aios.streams.processors.agent_mcp import RoleToolboxes


async def offered_tools(rt: Runtime) -> dict[str, Any]:
    """Connect to the MCP servers of ``rt``'s roles, as an agent worker does, and say what it found."""
    boxes = RoleToolboxes(rt)
    try:
        await boxes.start()
        return boxes.describe()
    finally:
        await boxes.aclose()


@click.command()
@click.option("--role", "roles", multiple=True, help="Only this role (repeatable); default: AIOS_ROLES.")
@json_option
def tools(roles: tuple[str, ...], as_json: bool) -> None:
    """Each role's tools, built-in and MCP, and each MCP server's version (connected to as a worker does)."""
    settings = settings_or_exit(roles=",".join(roles) if roles else None)
    try:
        found = asyncio.run(offered_tools(Runtime(settings)))
    except AiosError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        emit_json(found)
        return
    servers = Table("MCP server", "transport", "reports itself as", "tools")
    for name, server in found["servers"].items():
        reached = server["tools"] >= 0
        servers.add_row(name, server["transport"], f"{server['server_name']} {server['version']}".strip() or "-",
                        str(server["tools"]) if reached else "[red]unreachable[/red]")
    if found["servers"]:
        console.print(servers)
    table = Table("role", "tool", "from", "description")
    for role, offered in found["roles"].items():
        for tool in offered or [{"name": "-", "source": "", "description": "no tools"}]:
            table.add_row(role, tool["name"], tool["source"], tool["description"][:80])
    console.print(table)
