"""AIOS_EVENT_LOOP: which loop a processor process runs on, and a clear error when the one asked for
is not installed."""

from __future__ import annotations

import asyncio
import builtins
from typing import Any

import pytest
import uvloop

from aios.schemas.errors import ConfigError
from aios.streams.engine.loops import loop_factory
from aios.streams.settings import load_settings


def _kind_of(factory: Any) -> str:
    loop = factory()
    try:
        return "uvloop" if isinstance(loop, uvloop.Loop) else "asyncio"
    finally:
        loop.close()


@pytest.mark.parametrize(("setting", "expected"), [("auto", "uvloop"), ("uvloop", "uvloop"), ("asyncio", "asyncio")])
def test_each_setting_picks_its_loop_where_uvloop_is_installed(setting: str, expected: str) -> None:
    assert _kind_of(loop_factory(setting)) == expected


def _without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def refuse(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "uvloop":
            raise ImportError("No module named 'uvloop'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", refuse)


def test_auto_falls_back_to_asyncio_where_uvloop_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    _without_uvloop(monkeypatch)
    assert loop_factory("auto") is asyncio.new_event_loop


def test_asking_for_uvloop_where_it_is_missing_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    _without_uvloop(monkeypatch)
    with pytest.raises(ConfigError, match="pip install uvloop, or set AIOS_EVENT_LOOP=auto"):
        loop_factory("uvloop")


def test_the_setting_refuses_an_unknown_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIOS_EVENT_LOOP", "trio")
    with pytest.raises(ConfigError, match="AIOS_EVENT_LOOP"):
        load_settings()


def test_a_processor_coroutine_runs_on_the_chosen_loop() -> None:
    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__.split(".")[0]

    with asyncio.Runner(loop_factory=loop_factory("auto")) as runner:
        assert runner.run(which()) == "uvloop"
