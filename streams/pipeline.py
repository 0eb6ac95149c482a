"""Run AIOS's processors by name: the stream engine (``streams.engine``) with the processors
registered in ``streams.processors``. ``aios up``, ``aios worker``, the demo, benches and tests
start processors through here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import faust

from aios.streams.engine import app as engine
from aios.streams.engine.app import EMBEDDED, Register, RunningApp
from aios.streams.engine.runtime import Runtime
from aios.streams.errors import OrchestrationError
from aios.streams.processors import PROCESSORS
from aios.streams.settings import Settings

__all__ = ["EMBEDDED", "PROCESSORS", "RunningApp", "build_app", "check_processors", "run_forever", "running"]


def check_processors(names: Sequence[str]) -> list[Register]:
    """The registrations of ``names``; an unknown name is an error that lists the known ones."""
    unknown = [n for n in names if n not in PROCESSORS]
    if unknown:
        raise OrchestrationError(f"unknown processor {', '.join(unknown)}; choose from: {', '.join(PROCESSORS)}")
    return [PROCESSORS[n] for n in names]


def build_app(settings: Settings, names: Sequence[str], name: str) -> tuple[faust.App, Runtime]:
    return engine.build_app(settings, check_processors(names), name)


@asynccontextmanager
async def running(settings: Settings, names: Sequence[str], name: str = EMBEDDED, *,
                  ready_timeout_s: float = 60.0) -> AsyncIterator[RunningApp]:
    """Start the named processors in this event loop; stop them (committing offsets) on exit."""
    async with engine.running(settings, check_processors(names), name, ready_timeout_s=ready_timeout_s) as live:
        yield live


def run_forever(settings: Settings, names: Sequence[str], name: str,
                on_ready: Callable[[], None] | None = None) -> None:
    """Run the named processors on their own event loop (AIOS_EVENT_LOOP) until SIGINT/SIGTERM,
    with /metrics served (see the engine)."""
    engine.run_processors(settings, check_processors(names), name, on_ready)

