"""The one check every table of AIOS_LLM_CONFIG gets (deployments, models, MCP servers): it is a
table, and it has only known keys, each error naming where in the file it is."""

from __future__ import annotations

from typing import Any, cast

from aios.schemas.errors import ConfigError


def known_table(entry: object, where: str, known: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be a table (an object), not {type(entry).__name__}")
    fields = cast(dict[str, Any], entry)
    for key in fields:
        if key not in known:
            raise ConfigError(f"{where}: unknown key {str(key)!r}; known: {', '.join(known)}")
    return fields
