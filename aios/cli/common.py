"""Settings loading for commands: a bad setting is a clear one-line error, not a traceback."""

from __future__ import annotations

from typing import Any

import click

from aios.schemas.errors import AiosError
from aios.streams.settings import Settings, load_settings


def settings_or_exit(**overrides: Any) -> Settings:
    try:
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except AiosError as exc:
        raise click.ClickException(str(exc)) from exc
