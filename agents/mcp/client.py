"""One long-lived connection to an MCP server, shared by every task of a worker.

The SDK's client is an async context manager whose transport (an HTTP session, or a child process
on stdio) lives in anyio task groups, which must be entered and left by the same task. So one
*owner* task per server holds it open, and the tasks of the worker send their calls through it
concurrently (requests are matched to answers by id). When the connection breaks, the owner leaves
and the next call opens a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

from pydantic import ValidationError

from aios.agents.mcp.config import McpServerConfig
from aios.agents.mcp.errors import McpTimeoutError, McpToolError, McpUnavailableError

try:
    import httpx2  # the SDK's HTTP client (it comes with the mcp extra)
    import mcp_types
    from mcp import Client, MCPError, StdioServerParameters
    from mcp.client.streamable_http import streamable_http_client
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("MCP tools need the mcp extra: pip install 'aios[mcp]'") from exc

log = logging.getLogger("aios.agents.mcp")
CALL_ID_META = "aios/tool-call-id"  # the _meta key of a call's id (agents/runner.py current_tool_call_id)
MAX_LIST_PAGES = 20  # a server whose tools/list never ends cannot hold the start forever


@dataclass(frozen=True)
class ServerIdentity:
    """Who answered: the name and version the server gave (either may be empty)."""

    name: str
    version: str


class McpConnection:
    """Calls to one server's tools over one connection, reopened when it breaks."""

    def __init__(self, config: McpServerConfig, *, connect_timeout_s: float, call_timeout_s: float,
                 bearer_token: str | None = None) -> None:
        self.config = config
        self.connect_timeout_s = connect_timeout_s
        self.call_timeout_s = config.timeout_s or call_timeout_s
        self._bearer_token = bearer_token
        self._client: Client | None = None
        self._owner: asyncio.Task[None] | None = None
        self._leave = asyncio.Event()
        self._opening = asyncio.Lock()
        self.identity = ServerIdentity("", "")

    @property
    def name(self) -> str:
        return self.config.name

    async def open(self) -> ServerIdentity:
        """Connect (if not connected) within the connect timeout; raise McpUnavailableError if not."""
        await self._connected()
        return self.identity

    async def list_tools(self) -> list[dict[str, Any]]:
        """Every tool the server offers, as the JSON its tools/list gave (name, description, inputSchema)."""
        client = await self._connected()
        tools: list[dict[str, Any]] = []
        cursor: str | None = None
        try:
            for _ in range(MAX_LIST_PAGES):
                page = await asyncio.wait_for(client.list_tools(cursor=cursor, cache_mode="refresh"),
                                              self.connect_timeout_s)
                tools += [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in page.tools]
                cursor = page.next_cursor
                if cursor is None:
                    break
        except Exception as exc:  # the boundary, as in call(): the worker starts without these tools
            await self._broken()
            raise McpUnavailableError(f"MCP server {self.name!r} did not list its tools: {_describe(exc)}",
                                      server=self.name, tool="tools/list") from exc
        return tools

    async def call(self, tool: str, arguments: Mapping[str, Any], *,
                   call_id: str | None = None) -> mcp_types.CallToolResult:
        """Call ``tool``; the server's errors, timeouts and a broken connection raise McpError kinds.
        ``call_id`` goes in the request's ``_meta`` as ``aios/tool-call-id``: the same on a replay."""
        client = await self._connected(tool)
        # An open TypedDict (extra_items): mypy does not know the extra keys it allows.
        meta = cast(mcp_types.RequestParamsMeta, {CALL_ID_META: call_id}) if call_id else None
        try:
            return await client.call_tool(tool, dict(arguments), read_timeout_seconds=self.call_timeout_s, meta=meta)
        except MCPError as exc:
            if exc.code == mcp_types.REQUEST_TIMEOUT:
                raise McpTimeoutError(f"{self.name}.{tool} gave no answer within {self.call_timeout_s:g}s",
                                      server=self.name, tool=tool) from exc
            if exc.code == mcp_types.CONNECTION_CLOSED:
                await self._broken()
                raise McpUnavailableError(f"the connection to MCP server {self.name!r} closed during the call",
                                          server=self.name, tool=tool) from exc
            raise McpToolError(f"{self.name}.{tool} failed: {exc.message}", server=self.name, tool=tool) from exc
        except ValidationError as exc:  # the server answered something that is not a tool result
            raise McpToolError(f"{self.name}.{tool} answered something that is not an MCP tool result: "
                               f"{_describe(exc)}", server=self.name, tool=tool) from exc
        except Exception as exc:
            # The boundary: whatever the transport raised (anyio's closed streams, OS errors, HTTP errors
            # in task groups), the model reads a tool error and the connection is opened anew.
            await self._broken()
            raise McpUnavailableError(f"the connection to MCP server {self.name!r} broke: {_describe(exc)}",
                                      server=self.name, tool=tool) from exc

    async def aclose(self) -> None:
        """Leave the connection (stops a stdio server's process) and wait for the owner to finish."""
        self._leave.set()
        owner, self._owner = self._owner, None
        if owner is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(owner, 10)

    # --- the owner task ------------------------------------------------------------------------

    async def _connected(self, tool: str = "connect") -> Client:
        client = self._client
        if client is not None and self._owner is not None and not self._owner.done():
            return client
        async with self._opening:  # one connection attempt at a time, however many calls wait
            if self._client is not None and self._owner is not None and not self._owner.done():
                return self._client
            ready: asyncio.Future[Client] = asyncio.get_running_loop().create_future()
            self._leave = asyncio.Event()
            self._owner = asyncio.create_task(self._own(ready), name=f"mcp-{self.name}")
            try:
                return await asyncio.wait_for(asyncio.shield(ready), self.connect_timeout_s)
            except TimeoutError as exc:
                await self._broken()
                raise McpUnavailableError(f"MCP server {self.name!r} did not connect within "
                                          f"{self.connect_timeout_s:g}s", server=self.name, tool=tool) from exc
            except McpUnavailableError as exc:
                raise McpUnavailableError(str(exc), server=self.name, tool=tool) from exc

    async def _own(self, ready: asyncio.Future[Client]) -> None:
        try:
            async with self._transport() as client:
                info = client.server_info
                self.identity = ServerIdentity(info.name if info else "", info.version if info else "")
                self._client = client
                if not ready.done():
                    ready.set_result(client)
                await self._leave.wait()
        except BaseException as exc:  # noqa: BLE001 - the owner reports every way the connection ends
            if not ready.done():
                ready.set_exception(McpUnavailableError(
                    f"MCP server {self.name!r} cannot be reached: {_describe(exc)}", server=self.name, tool="connect"))
            elif not isinstance(exc, asyncio.CancelledError):
                log.warning("mcp: the connection to %s ended: %s", self.name, _describe(exc))
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            self._client = None

    @contextlib.asynccontextmanager
    async def _transport(self) -> AsyncIterator[Client]:
        c = self.config
        if c.transport == "stdio":
            assert c.command is not None  # noqa: S101 - the config parser requires it for stdio
            params = StdioServerParameters(command=c.command, args=list(c.args), env=dict(c.env) or None, cwd=c.cwd)
            async with Client(params, cache=None) as client:
                yield client
            return
        assert c.url is not None  # noqa: S101 - the config parser requires it for http
        headers = dict(c.headers)
        if self._bearer_token:
            headers["Authorization"] = f"Bearer {self._bearer_token}"
        # The SDK's own defaults: a server may hold a response stream open for minutes.
        timeout = httpx2.Timeout(30.0, read=300.0)
        async with httpx2.AsyncClient(headers=headers, timeout=timeout) as http, \
                Client(streamable_http_client(c.url, http_client=http), cache=None) as client:
            yield client

    async def _broken(self) -> None:
        """Leave a connection that failed; the next call opens a new one."""
        self._leave.set()
        owner = self._owner
        if owner is not None and not owner.done():
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(owner), 5)
            if not owner.done():
                owner.cancel()


def _describe(exc: BaseException) -> str:
    """The innermost useful message of an error (anyio task groups wrap them in groups)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:300] + "…"
