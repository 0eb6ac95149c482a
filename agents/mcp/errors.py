"""Why an MCP tool call failed. The model made the call, so it reads each of these as the call's
result (``error: ...``) and may try something else; none of them fails the task.

    AiosError                     (schemas.errors)
    └── McpError                  every failure of an MCP tool call
        ├── McpUnavailableError   the server could not be reached or its connection broke
        ├── McpTimeoutError       no answer within the server's timeout_s
        ├── McpToolError          the server answered with an error (isError, or a JSON-RPC error)
        └── McpResultTooLargeError  the result is longer than the server's max_result_chars
"""

from __future__ import annotations

from aios.schemas.errors import AiosError


class McpError(AiosError):
    """An MCP tool call failed; ``server`` and ``tool`` say which."""

    def __init__(self, message: str, *, server: str, tool: str) -> None:
        super().__init__(message)
        self.server = server
        self.tool = tool


class McpUnavailableError(McpError):
    """The server could not be reached, or its connection (HTTP session, stdio process) broke."""


class McpTimeoutError(McpError):
    """The server did not answer within the call's timeout."""


class McpToolError(McpError):
    """The server ran the call and reported an error."""


class McpResultTooLargeError(McpError):
    """The result exceeds the server's ``max_result_chars``: it would crowd the prompt out."""
