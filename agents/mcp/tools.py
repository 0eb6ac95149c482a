"""MCP tools as agent tools: fetched once at start, cached per server version, allowed per role.

A worker connects to the servers its roles may call, and takes each server's tool definitions from
the definitions cache under (server, its name and version as it reports them), listing them from
the server only on a miss. Every worker, and every replay, of one server version so sees the same
tools, even when the server changes its list without a new version. A tool's name for the model is
``<server>__<tool>``. A failed call (unreachable, timeout, the server's error, a result over
``max_result_chars``) is answered to the model as ``error: ...``, never raised.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import mcp_types
from jsonschema.exceptions import SchemaError as JsonSchemaError
from jsonschema.validators import Draft202012Validator

from aios.agents.llm.base import ToolSpec
from aios.agents.mcp.client import McpConnection, ServerIdentity
from aios.agents.mcp.config import McpConfig
from aios.agents.mcp.errors import McpError, McpResultTooLargeError, McpToolError, McpUnavailableError
from aios.agents.runner import current_tool_call_id
from aios.agents.tools import ToolContext
from aios.schemas.jsonlimits import MAX_JSON_DEPTH, json_depth

log = logging.getLogger("aios.agents.mcp")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what every vendor accepts as a function name
MAX_DESCRIPTION_CHARS = 1_000
MAX_TOOLS_PER_SERVER = 128


class DefinitionCache(Protocol):
    """Tool definitions by key; the first ``put`` of a key wins (workers racing agree on one list)."""

    async def get(self, key: str) -> list[dict[str, Any]] | None: ...

    async def put(self, key: str, tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Store ``tools`` unless the key holds a list already; return the list the key holds."""
        ...


class McpObserver(Protocol):
    """Told every MCP call's outcome (``ok`` or the error's class name) and duration; and each
    server's state at start (its tool count, or -1 when it could not be reached)."""

    def call(self, server: str, outcome: str, seconds: float) -> None: ...

    def server(self, server: str, tools: int) -> None: ...


def definitions_key(config_target: str, identity: ServerIdentity) -> str:
    """The cache key of a server's definitions: its configured target (URL or command) and the name
    and version it reports. A server that reports no version is keyed by nothing stable: listed anew."""
    target = hashlib.sha256(config_target.encode()).hexdigest()[:16]
    return f"{target}:{identity.name}:{identity.version}"


class McpTool:
    """One tool of one server, as the model sees it."""

    def __init__(self, connection: McpConnection, definition: Mapping[str, Any],
                 observer: McpObserver | None = None) -> None:
        self.connection = connection
        self.tool = str(definition["name"])
        description = str(definition.get("description") or definition.get("title") or self.tool)
        if len(description) > MAX_DESCRIPTION_CHARS:
            description = description[:MAX_DESCRIPTION_CHARS] + "…"
        self.spec = ToolSpec(f"{connection.name}__{self.tool}", description, dict(definition["inputSchema"]))
        self.observer = observer

    async def run(self, arguments: Mapping[str, Any], ctx: ToolContext) -> str:
        started = time.perf_counter()
        outcome = "ok"
        try:
            result = await self.connection.call(self.tool, arguments, call_id=current_tool_call_id())
            return result_text(result, server=self.connection.name, tool=self.tool,
                               limit=self.connection.config.max_result_chars)
        except McpError as exc:
            outcome = type(exc).__name__
            return f"error: {exc}"
        finally:
            if self.observer is not None:
                self.observer.call(self.connection.name, outcome, time.perf_counter() - started)


def result_text(result: mcp_types.CallToolResult, *, server: str, tool: str, limit: int) -> str:
    """A call's result as the text the model reads; an error result raises McpToolError, and a text
    longer than ``limit`` McpResultTooLargeError."""
    parts: list[str] = []
    for block in result.content:
        if isinstance(block, mcp_types.TextContent):
            parts.append(block.text)
        elif isinstance(block, mcp_types.ImageContent | mcp_types.AudioContent):
            parts.append(f"[{block.type} {block.mime_type}, {len(block.data)} characters of base64 not shown]")
        elif isinstance(block, mcp_types.EmbeddedResource):
            res = block.resource
            text = getattr(res, "text", None)
            parts.append(text if isinstance(text, str) else f"[resource {res.uri}, binary, not shown]")
        elif isinstance(block, mcp_types.ResourceLink):
            parts.append(f"[resource {block.uri}]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    text = "\n".join(parts)
    if result.is_error:
        raise McpToolError(f"{server}.{tool} failed: {_cut(text or 'no detail given', 2_000)}", server=server,
                           tool=tool)
    if len(text) > limit:
        raise McpResultTooLargeError(
            f"{server}.{tool} returned {len(text)} characters, over the {limit} this server's results may be; "
            "ask for less (a narrower query, a page)", server=server, tool=tool)
    return text


class McpToolset:
    """The MCP tools of a worker's roles: connected and defined by :meth:`start`."""

    def __init__(self, config: McpConfig, connections: Sequence[McpConnection], *,
                 cache: DefinitionCache | None = None, observer: McpObserver | None = None) -> None:
        self.config = config
        self.connections = {c.name: c for c in connections}
        self.cache = cache
        self.observer = observer
        self.definitions: dict[str, list[dict[str, Any]]] = {}  # server -> its tools, as fetched at start

    async def start(self) -> None:
        """Connect and fetch every server's definitions. A server that cannot be reached is logged and
        offers no tools until the worker starts again; the others are not held up by it."""
        for name, connection in self.connections.items():
            try:
                identity = await connection.open()
                tools = await self._definitions(connection, identity)
            except McpUnavailableError as exc:
                log.error("mcp: %s; its tools are not offered until the worker restarts", exc)
                if self.observer is not None:
                    self.observer.server(name, -1)
                continue
            self.definitions[name] = [t for t in tools if offerable(name, t)][:MAX_TOOLS_PER_SERVER]
            if self.observer is not None:
                self.observer.server(name, len(self.definitions[name]))
            log.info("mcp: %s (%s %s) offers %d tools", name, identity.name, identity.version or "unversioned",
                     len(self.definitions[name]))

    async def _definitions(self, connection: McpConnection, identity: ServerIdentity) -> list[dict[str, Any]]:
        c = connection.config
        target = c.url or " ".join([c.command or "", *c.args])
        key = definitions_key(target, identity)
        if self.cache is None or not identity.version:
            return await connection.list_tools()
        cached = await self.cache.get(key)
        if cached is not None:
            return cached
        return await self.cache.put(key, await connection.list_tools())

    def tools_for(self, role: str) -> list[McpTool]:
        """The tools ``role`` may call, in the servers' order."""
        return [McpTool(self.connections[server], d, self.observer)
                for server, defs in self.definitions.items() for d in defs
                if self.config.allowed(role, server, str(d["name"]))]

    async def aclose(self) -> None:
        for connection in self.connections.values():
            await connection.aclose()


def offerable(server: str, definition: Mapping[str, Any]) -> bool:
    """A definition the model can be offered: a name every vendor accepts, an object schema that is
    valid JSON Schema. A server's odd tool is left out (and logged), not the worker stopped."""
    name = definition.get("name")
    schema = definition.get("inputSchema")
    problem = None
    if not isinstance(name, str) or not _MODEL_NAME.match(f"{server}__{name}"):
        problem = "its name is not letters, digits, '_' or '-' within 64 characters with the server's prefix"
    elif not isinstance(schema, dict) or schema.get("type") != "object":
        problem = "its inputSchema is not an object schema"
    elif json_depth(schema, stop_above=MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        problem = f"its inputSchema is nested deeper than {MAX_JSON_DEPTH} levels"
    else:
        try:
            Draft202012Validator.check_schema(schema)
        except JsonSchemaError as exc:
            problem = f"its inputSchema is not valid JSON Schema ({exc.message})"
    if problem is not None:
        log.warning("mcp: tool %r of %s is not offered: %s", name, server, problem)
    return problem is None


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
