"""A real MCP server built with the official SDK, for the tests: it counts its calls.

Run as ``python tests/integration/mcp_server.py stdio`` or ``... http PORT``. Every tool call appends
its tool's name to the file ``MCP_TEST_CALLS`` names, so a test counts the calls the server really
received, whatever process made them. ``MCP_TEST_VERSION`` is the version it reports, and
``MCP_TEST_EXTRA=1`` adds a tool without changing the version (the definitions cache must hide it).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("aios-test-counter", version=os.environ.get("MCP_TEST_VERSION", "1.0.0"), log_level="WARNING")


def _count(name: str, call_id: str = "-") -> None:
    with Path(os.environ["MCP_TEST_CALLS"]).open("a", encoding="utf-8") as calls:
        calls.write(f"{name} {call_id}\n")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two whole numbers."""
    _count("add")
    return a + b


@server.tool()
def record(note: str, ctx: Context) -> str:
    """Record a note (a side effect: calling twice records it twice)."""
    meta = ctx.request_context.meta or {}
    _count("record", str(meta.get("aios/tool-call-id", "-")))
    return f"recorded: {note}"


@server.tool()
async def slow(seconds: float) -> str:
    """Answer after some seconds."""
    _count("slow")
    await asyncio.sleep(seconds)
    return "done"


@server.tool()
def fail(message: str) -> str:
    """Fail with the message."""
    _count("fail")
    raise ToolError(message)


@server.tool()
def big(chars: int) -> str:
    """A long text of ``chars`` characters."""
    _count("big")
    return "x" * chars


if os.environ.get("MCP_TEST_EXTRA") == "1":

    @server.tool()
    def extra() -> str:
        """A tool added without a new version."""
        _count("extra")
        return "extra"


def calls(path: Path) -> list[str]:
    """The tools the server ran, in order."""
    return [line.split()[0] for line in call_lines(path)]


def call_ids(path: Path) -> list[str]:
    """The ``aios/tool-call-id`` each call of ``record`` carried in its ``_meta``."""
    return [line.split()[1] for line in call_lines(path) if line.startswith("record ")]


def call_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


if __name__ == "__main__":
    if sys.argv[1] == "stdio":
        server.run("stdio")
    else:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
