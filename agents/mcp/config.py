"""The ``[mcp]`` section of the config file (``AIOS_LLM_CONFIG``): MCP servers and, per role, the
tools it may call.

::

    [[mcp.servers]]
    name = "files"                        # the model sees its tools as files__<tool>
    transport = "http"                    # Streamable HTTP
    url = "https://mcp.example.com/mcp"
    bearer_token_env = "FILES_MCP_TOKEN"  # the variable holding its token (optional)
    timeout_s = 30                        # one call (default AIOS_MCP_TIMEOUT_S)
    max_result_chars = 8000               # a longer result is an error the model sees

    [[mcp.servers]]
    name = "calc"
    transport = "stdio"                   # a local process, spoken to on its stdin/stdout
    command = "python"
    args = ["-m", "calc_server"]
    env = { CALC_PRECISION = "6" }

    [mcp.roles]
    backend = ["files.read_file", "calc.*"]   # server.tool, or server.* for all its tools

Only the file is read here; the variables it names are read by ``streams`` and passed in. Every
mistake is a ``ConfigError`` naming the file, the entry and what to fix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from aios.agents.config_tables import known_table
from aios.schemas.errors import ConfigError
from aios.schemas.limits import MAX_TOOL_RESULT_CHARS

# A server's name prefixes its tools' names, which every vendor limits to [A-Za-z0-9_-]{1,64}.
_SERVER_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,23}$")
_ROLE = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_PATTERN = re.compile(r"^([a-z][a-z0-9_-]{0,23})\.(\*|[A-Za-z0-9_.-]{1,64})$")
_SERVER_KEYS = ("name", "transport", "url", "headers", "bearer_token_env", "command", "args", "env", "cwd",
                "timeout_s", "max_result_chars")
MAX_SERVERS = 32
MAX_RESULT_CHARS_CAP = MAX_TOOL_RESULT_CHARS  # a result is a prompt part too: the toolbox cuts past it
MAX_TIMEOUT_S = 3_600.0

Transport = Literal["http", "stdio"]


@dataclass(frozen=True)
class McpServerConfig:
    """One ``[[mcp.servers]]`` entry; ``where`` names it in errors."""

    where: str
    name: str
    transport: Transport
    url: str | None = None  # http
    headers: Mapping[str, str] = field(default_factory=dict)  # http
    bearer_token_env: str | None = None  # http: the variable holding a bearer token
    command: str | None = None  # stdio
    args: tuple[str, ...] = ()  # stdio
    env: Mapping[str, str] = field(default_factory=dict)  # stdio: added to a minimal environment
    cwd: str | None = None  # stdio
    timeout_s: float | None = None  # None: AIOS_MCP_TIMEOUT_S
    max_result_chars: int = MAX_RESULT_CHARS_CAP


@dataclass(frozen=True)
class McpConfig:
    """The servers, and which of their tools each role may call (``server.tool`` or ``server.*``)."""

    origin: str
    servers: tuple[McpServerConfig, ...] = ()
    roles: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def server(self, name: str) -> McpServerConfig:
        return next(s for s in self.servers if s.name == name)

    def allowed(self, role: str, server: str, tool: str) -> bool:
        """May ``role`` call ``tool`` of ``server``?"""
        return any(p in (f"{server}.*", f"{server}.{tool}") for p in self.roles.get(role, ()))

    def servers_for(self, roles: tuple[str, ...]) -> tuple[McpServerConfig, ...]:
        """The servers some of ``roles`` may call: the only ones a worker of those roles connects to."""
        wanted = {p.partition(".")[0] for r in roles for p in self.roles.get(r, ())}
        return tuple(s for s in self.servers if s.name in wanted)


def parse_mcp_section(data: object, origin: str) -> McpConfig:
    """Check the decoded ``mcp`` table; ``origin`` names the file in errors."""
    where = f"{origin} [mcp]"
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a table with 'servers' ([[mcp.servers]]) and 'roles' ([mcp.roles])")
    unknown = sorted(str(k) for k in data if k not in ("servers", "roles"))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; the section has 'servers' and 'roles'")
    entries = data.get("servers", [])
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{where}: 'servers' must be a non-empty list of tables ([[mcp.servers]] in TOML)")
    if len(entries) > MAX_SERVERS:
        raise ConfigError(f"{where}: {len(entries)} servers, more than {MAX_SERVERS}")
    servers = tuple(_server(entry, f"{origin} mcp.servers[{i}]") for i, entry in enumerate(entries))
    seen: dict[str, str] = {}
    for server in servers:
        if server.name in seen:
            raise ConfigError(f"{server.where}: the name {server.name!r} is taken by {seen[server.name]}")
        seen[server.name] = server.where
    roles = _roles(data.get("roles", {}), f"{origin} mcp.roles", set(seen))
    return McpConfig(origin, servers, roles)


def _server(entry: object, where: str) -> McpServerConfig:
    fields = known_table(entry, where, _SERVER_KEYS)
    name = fields.get("name")
    if not isinstance(name, str) or not _SERVER_NAME.match(name):
        raise ConfigError(f"{where}: 'name' must be lowercase letters, digits, '_' or '-' (at most 24, starting "
                          f"with a letter), not {name!r}: it prefixes the tool names the model sees")
    where = f"{where} ({name})"
    transport = fields.get("transport")
    timeout = fields.get("timeout_s")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)
                                or not 0 < timeout <= MAX_TIMEOUT_S):
        raise ConfigError(f"{where}: 'timeout_s' must be a number of seconds in (0, {MAX_TIMEOUT_S:g}], "
                          f"not {timeout!r}")
    limit = fields.get("max_result_chars", MAX_RESULT_CHARS_CAP)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_RESULT_CHARS_CAP:
        raise ConfigError(f"{where}: 'max_result_chars' must be a whole number in [1, {MAX_RESULT_CHARS_CAP}], "
                          f"not {limit!r}")
    common: dict[str, Any] = {"where": where, "name": name, "timeout_s": None if timeout is None else float(timeout),
                              "max_result_chars": limit}
    if transport == "http":
        _only(fields, where, "http", ("url", "headers", "bearer_token_env"))
        url = fields.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}: an http server needs 'url', an http:// or https:// URL, not {url!r}")
        token_env = fields.get("bearer_token_env")
        if token_env is not None and (not isinstance(token_env, str) or not _ENV_NAME.match(token_env)):
            raise ConfigError(f"{where}: 'bearer_token_env' must name an environment variable, not {token_env!r}")
        return McpServerConfig(**common, transport="http", url=url, headers=_strings(fields, "headers", where),
                               bearer_token_env=token_env)
    if transport == "stdio":
        _only(fields, where, "stdio", ("command", "args", "env", "cwd"))
        command = fields.get("command")
        if not isinstance(command, str) or not command.strip():
            raise ConfigError(f"{where}: a stdio server needs 'command', the program to start, not {command!r}")
        args = fields.get("args", [])
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise ConfigError(f"{where}: 'args' must be a list of strings")
        cwd = fields.get("cwd")
        if cwd is not None and (not isinstance(cwd, str) or not cwd):
            raise ConfigError(f"{where}: 'cwd' must be a directory path, not {cwd!r}")
        return McpServerConfig(**common, transport="stdio", command=command, args=tuple(args),
                               env=_strings(fields, "env", where), cwd=cwd)
    raise ConfigError(f"{where}: 'transport' must be \"http\" (Streamable HTTP) or \"stdio\", not {transport!r}")


def _only(fields: Mapping[str, Any], where: str, transport: str, allowed: tuple[str, ...]) -> None:
    transport_keys = ("url", "headers", "bearer_token_env", "command", "args", "env", "cwd")
    for key in fields:
        if key in transport_keys and key not in allowed:
            raise ConfigError(f"{where}: {key!r} is not for a {transport} server; it takes {', '.join(allowed)}")


def _strings(fields: Mapping[str, Any], key: str, where: str) -> dict[str, str]:
    value = fields.get(key, {})
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ConfigError(f"{where}: '{key}' must be a table of strings ({key} = {{ NAME = \"value\" }})")
    return dict(value)


def _roles(data: object, where: str, servers: set[str]) -> dict[str, tuple[str, ...]]:
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a table: role = [\"server.tool\", \"server.*\", ...]")
    roles: dict[str, tuple[str, ...]] = {}
    for role, patterns in data.items():
        if not isinstance(role, str) or not _ROLE.match(role):
            raise ConfigError(f"{where}: {role!r} is not a role name (lowercase letters, digits, '_', '-')")
        if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
            raise ConfigError(f"{where}.{role} must be a list of \"server.tool\" or \"server.*\" strings")
        for pattern in patterns:
            match = _PATTERN.match(pattern)
            if match is None:
                raise ConfigError(f"{where}.{role}: {pattern!r} is not \"server.tool\" or \"server.*\"")
            if match.group(1) not in servers:
                raise ConfigError(f"{where}.{role}: {pattern!r} names no server of [[mcp.servers]]; "
                                  f"servers: {', '.join(sorted(servers))}")
        roles[role] = tuple(patterns)
    return roles
