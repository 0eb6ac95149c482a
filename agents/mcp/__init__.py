"""Tools from MCP servers (the official ``mcp`` SDK, the ``mcp`` extra): the config file's
``[mcp]`` section, one connection per server, and the tools a role may call."""
