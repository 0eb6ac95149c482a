"""The event loop a processor process runs on (AIOS_EVENT_LOOP), kept apart from the engine so
that light commands (``aios dev llm``) pick a loop without importing faust."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aios.schemas.errors import ConfigError


def loop_factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """The event loop AIOS_EVENT_LOOP names (see the setting); ``uvloop`` where it is not installed
    is a configuration error that says what to do."""
    if kind == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError as exc:
        if kind == "auto":
            return asyncio.new_event_loop
        raise ConfigError("AIOS_EVENT_LOOP=uvloop, but uvloop is not installed: pip install uvloop, "
                          "or set AIOS_EVENT_LOOP=auto (or asyncio)") from exc
    return uvloop.new_event_loop
