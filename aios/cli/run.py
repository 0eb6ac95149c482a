"""``aios up`` (every processor in one process) and ``aios worker NAME`` (one processor)."""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager

import click

from aios.cli.common import settings_or_exit
from aios.cli.output import err_console
from aios.schemas.errors import AiosError
from aios.streams.pipeline import EMBEDDED, RunningApp, Sidecar, check_processors, serve_forever
from aios.streams.processors import PROCESSORS
from aios.streams.settings import Settings


def _api_sidecar(settings: Settings) -> Sidecar:
    """``aios up`` serves the API too, sharing the processors' history store (chdb is one per process)."""
    from aios.api.server import api_sidecar  # the CLI is the edge that composes api/ with streams/

    def sidecar(live: RunningApp) -> AbstractAsyncContextManager[object]:
        err_console.print(f"aios: API on {settings.api.host}:{settings.api.port}")
        return api_sidecar(settings, store=lambda: live.runtime.store)
    return sidecar


def _run(settings: Settings, processors: list[str], name: str, sidecar: Sidecar | None = None) -> None:
    err_console.print(f"aios: running {', '.join(processors)} as group {settings.kafka.topic_prefix}-{name}; Ctrl-C stops")
    try:
        asyncio.run(serve_forever(settings, processors, name, on_ready=lambda: err_console.print("aios: ready"),
                                  sidecar=sidecar))
    except AiosError as exc:
        raise click.ClickException(str(exc)) from exc


@click.command()
@click.option("--no-stack", is_flag=True, help="Do not start the local Kafka/Redis (use what settings point at).")
@click.option("--no-api", is_flag=True, help="Do not serve the API and dashboard (AIOS_API_PORT).")
def up(no_stack: bool, no_api: bool) -> None:
    """Run every processor in one process (embedded mode), starting the local stack if needed."""
    settings = settings_or_exit()
    if not no_stack:
        from aios.devstack import up as stack_up
        from aios.streams.topics import create_topics

        try:
            stack_up(settings)
            create_topics(settings)
        except AiosError as exc:
            raise click.ClickException(str(exc)) from exc
    _run(settings, list(PROCESSORS), EMBEDDED, None if no_api or settings.api.port == 0 else _api_sidecar(settings))


@click.command()
@click.argument("name", type=click.Choice(list(PROCESSORS)))
@click.option("--role", "roles", multiple=True, help="For `agents`: the role(s) this worker serves.")
def worker(name: str, roles: tuple[str, ...]) -> None:
    """Run one processor as its own consumer group (distributed mode)."""
    settings = settings_or_exit(roles=",".join(roles) if roles else None)
    check_processors([name])
    # Each role's workers form their own group, so roles scale independently.
    group = f"{name}-{'-'.join(settings.processing.roles)}" if name == "agents" else name
    _run(settings, [name], group)
