"""A small MCP server (the official SDK) for benches and trials: ``echo`` answers its text.

``python -m aios.agents.mcp.echo_server stdio`` or ``... http PORT`` (Streamable HTTP on loopback,
path ``/mcp``). It is a stand-in for a real server, like the wire-format LLM servers: it measures
what an MCP call costs AIOS, not what a tool costs.
"""

from __future__ import annotations

import sys

from mcp.server.mcpserver import MCPServer

server = MCPServer("aios-echo", version="1", log_level="WARNING")


@server.tool()
def echo(text: str) -> str:
    """Answer ``text``."""
    return text


def main(argv: list[str]) -> None:
    if argv[:1] == ["stdio"]:
        server.run("stdio")
    elif len(argv) == 2 and argv[0] == "http":
        server.run("streamable-http", host="127.0.0.1", port=int(argv[1]))
    else:
        raise SystemExit("usage: python -m aios.agents.mcp.echo_server stdio | http PORT")


if __name__ == "__main__":
    main(sys.argv[1:])
