"""Settings loading for commands: a bad setting is a clear one-line error, not a traceback. Loading
them also sets up the process's logs (streams.logs), named after the command or ``process``."""

from __future__ import annotations

from typing import Any

import click

from aios.schemas.errors import AiosError
from aios.streams.logs import configure
from aios.streams.settings import Settings, load_settings


def settings_or_exit(process: str | None = None, **overrides: Any) -> Settings:
    try:
        settings = load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except AiosError as exc:
        raise click.ClickException(str(exc)) from exc
    if process is None:
        context = click.get_current_context(silent=True)
        process = context.info_name if context is not None and context.info_name else "aios"
    configure(settings.observability, process)
    return settings
