"""The tools an agent worker offers each role: the read-only tools, and the MCP tools the ``[mcp]``
section of AIOS_LLM_CONFIG allows the role (agents/mcp/).

The worker connects to the MCP servers its roles may call when it starts, and takes their tool
definitions from Redis per server version (connectors/context/tooldefs.py), so that every worker
and every replay of one version sees the same tools. The bearer tokens the file names are read
here, at the edge.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aios.agents.tools import ReadDependencyOutput, SearchMemory, Tool, Toolbox
from aios.connectors.errors import StoreUnavailableError
from aios.schemas.errors import ConfigError
from aios.streams.engine.records import log
from aios.streams.engine.runtime import Runtime
from aios.streams.metrics import McpMetrics

if TYPE_CHECKING:
    from aios.agents.mcp.config import McpConfig
    from aios.agents.mcp.tools import DefinitionCache, McpToolset
    from aios.connectors.context.tooldefs import ToolDefinitionsCache


class RoleToolboxes:
    """One toolbox per role, built once the MCP servers have answered (:meth:`start`)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.base: list[Tool] = [ReadDependencyOutput(), SearchMemory()] if rt.settings.llm.agent_tools else []
        file = rt.llm_file
        self.mcp: McpConfig | None = file.mcp if file is not None else None
        self.toolset: McpToolset | None = None
        self._cache: ToolDefinitionsCache | None = None
        self._boxes: dict[str, Toolbox | None] = {}

    async def start(self) -> None:
        """Connect to the MCP servers the worker's roles may call and fetch their tools."""
        roles = self.rt.settings.processing.roles
        servers = self.mcp.servers_for(tuple(roles)) if self.mcp is not None else ()
        if self.mcp is not None and servers:
            try:
                from aios.agents.mcp.client import McpConnection
                from aios.agents.mcp.tools import McpToolset
            except ImportError as exc:
                raise ConfigError(f"{self.mcp.origin} has an [mcp] section: install the mcp extra "
                                  "(pip install 'aios[mcp]')") from exc
            from aios.connectors.context.tooldefs import ToolDefinitionsCache

            s = self.rt.settings
            connections = [McpConnection(c, connect_timeout_s=s.llm.mcp_connect_timeout_s,
                                         call_timeout_s=s.llm.mcp_timeout_s,
                                         bearer_token=os.environ.get(c.bearer_token_env) if c.bearer_token_env else None)
                           for c in servers]
            self._cache = ToolDefinitionsCache.from_url(s.stores.redis_url, prefix=s.kafka.topic_prefix,
                                                        ttl_s=s.llm.journal_ttl_s)
            self.toolset = McpToolset(self.mcp, connections, cache=_Forgiving(self._cache), observer=McpMetrics())
            await self.toolset.start()
        self._boxes = {role: self._box([*self.base, *(self.toolset.tools_for(role) if self.toolset else [])])
                       for role in roles}

    def for_role(self, role: str) -> Toolbox | None:
        """The role's toolbox, or None when it has no tools (the model is offered none)."""
        if role not in self._boxes:  # a role this worker was not started with: the base tools only
            self._boxes[role] = self._box(self.base)
        return self._boxes[role]

    def describe(self) -> dict[str, Any]:
        """What :meth:`start` found, for ``aios tools``: each role's tools with where they come from,
        and each server's identity and tool count (-1: it could not be reached)."""
        toolset = self.toolset
        roles = {}
        for role in self._boxes:
            mcp = toolset.tools_for(role) if toolset is not None else []
            roles[role] = ([{"name": t.spec.name, "source": "builtin", "description": t.spec.description}
                            for t in self.base]
                           + [{"name": t.spec.name, "source": f"mcp:{t.connection.name}", "description": t.spec.description}
                              for t in mcp])
        servers = {}
        for name, connection in (toolset.connections.items() if toolset is not None else ()):
            servers[name] = {"transport": connection.config.transport, "server_name": connection.identity.name,
                             "version": connection.identity.version,
                             "tools": len(toolset.definitions[name]) if toolset and name in toolset.definitions else -1}
        return {"roles": roles, "servers": servers}

    async def aclose(self) -> None:
        if self.toolset is not None:
            await self.toolset.aclose()
        if self._cache is not None:
            await self._cache.aclose()

    @staticmethod
    def _box(tools: Sequence[Tool]) -> Toolbox | None:
        return Toolbox(tools) if tools else None


class _Forgiving:
    """The definitions cache, read past a Redis outage at start: the tools are listed from the server
    instead, so a worker starts with its tools even while Redis is down."""

    def __init__(self, inner: DefinitionCache) -> None:
        self.inner = inner

    async def get(self, key: str) -> list[dict[str, Any]] | None:
        try:
            return await asyncio.wait_for(self.inner.get(key), 5)
        except (StoreUnavailableError, TimeoutError) as exc:
            log.warning("agents: the MCP definitions cache is unavailable (%s); listing the server", exc)
            return None

    async def put(self, key: str, tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
        try:
            return await asyncio.wait_for(self.inner.put(key, tools), 5)
        except (StoreUnavailableError, TimeoutError) as exc:
            log.warning("agents: the MCP definitions cache is unavailable (%s); not cached", exc)
            return tools
