"""The A2A endpoints need the a2a extra: without it the API still starts, serves the rest, and logs
what to install; with it, the cards and the JSON-RPC paths are routes."""

from __future__ import annotations

import logging
import sys

import pytest

from aios.api.app import create_app
from aios.streams.settings import load_settings

A2A_PATHS = {"/.well-known/agent-card.json", "/a2a/{role}/.well-known/agent-card.json", "/v1/a2a", "/v1/a2a/{role}"}


def paths(app: object) -> set[str]:
    return {getattr(r, "path", "") for r in app.routes}  # type: ignore[attr-defined]


def test_with_the_extra_the_a2a_routes_are_served() -> None:
    assert A2A_PATHS <= paths(create_app(load_settings()))
    assert not A2A_PATHS & paths(create_app(load_settings(api_a2a=False)))


def test_without_the_extra_the_api_starts_and_says_what_to_install(monkeypatch: pytest.MonkeyPatch,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    for name in [m for m in sys.modules if m == "a2a" or m.startswith("a2a.")] or ["a2a"]:
        monkeypatch.setitem(sys.modules, name, None)  # importing it raises ImportError, as when not installed
    monkeypatch.delitem(sys.modules, "aios.api.a2a", raising=False)
    with caplog.at_level(logging.WARNING, logger="aios.api.app"):
        app = create_app(load_settings())
    assert not A2A_PATHS & paths(app) and {"/", "/openapi.json"} <= paths(app)
    assert "pip install 'aios[a2a]'" in caplog.text
