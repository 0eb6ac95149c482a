"""The lock audit (infra/audit_lock.py) on recorded PyPI answers: exact for packages locked at
their latest release, the release JSON where it is served, and honest about what it could not audit."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("audit_lock", ROOT / "infra/audit_lock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["audit_lock"] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


audit_lock = _module()
VULN = {"id": "PYSEC-0000-1", "aliases": ["CVE-0000-1"], "fixed_in": ["2.0"], "withdrawn": None}
ANSWERS: dict[str, dict[str, Any] | None] = {
    "https://pypi.org/pypi/fresh/json": {"info": {"version": "1.0"}, "vulnerabilities": []},
    "https://pypi.org/pypi/stale/json": {"info": {"version": "2.0"}, "vulnerabilities": []},
    "https://pypi.org/pypi/stale/1.0/json": {"info": {"version": "1.0"}, "vulnerabilities": [VULN]},
    "https://pypi.org/pypi/pinned/json": {"info": {"version": "9.0"}, "vulnerabilities": []},
    "https://pypi.org/pypi/pinned/8.0/json": None,  # not served (as on registry-only machines)
    "https://pypi.org/pypi/bad/json": {"info": {"version": "1.0"}, "vulnerabilities": [
        VULN, {**VULN, "id": "PYSEC-0000-2", "withdrawn": "2025-01-01"}]},
}


def fetch(url: str) -> dict[str, Any] | None:
    return ANSWERS[url]


def test_each_package_is_audited_where_it_can_be_and_listed_where_not() -> None:
    report = audit_lock.audit([("fresh", "1.0"), ("stale", "1.0"), ("pinned", "8.0"), ("bad", "1.0")], fetch)
    assert sorted(report.audited) == ["bad==1.0", "fresh==1.0", "stale==1.0"]
    assert report.vulnerable == {"stale==1.0": ["PYSEC-0000-1 / CVE-0000-1 (fixed in: 2.0)"],
                                 "bad==1.0": ["PYSEC-0000-1 / CVE-0000-1 (fixed in: 2.0)"]}  # withdrawn ignored
    assert "locked below the latest release (9.0)" in report.not_audited["pinned==8.0"]
    assert report.failed(strict=False) and report.failed(strict=True)
    clean = audit_lock.audit([("fresh", "1.0"), ("pinned", "8.0")], fetch)
    assert not clean.failed(strict=False) and clean.failed(strict=True)


def test_an_allowed_advisory_does_not_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit_lock, "ALLOWED", {"PYSEC-0000-1": "not reachable from AIOS"})
    report = audit_lock.audit([("bad", "1.0")], fetch)
    assert report.vulnerable == {} and list(report.allowed) == ["bad==1.0"]


def test_the_lock_lists_registry_packages_only() -> None:
    packages = dict(audit_lock.locked(ROOT / "uv.lock"))
    assert "aios" not in packages and packages["starlette"] and packages["pyjwt"]
    # The floors raised for known advisories hold in the lock.
    def at_least(name: str, floor: tuple[int, ...]) -> bool:
        return tuple(int(x) for x in packages[name].split(".")[:len(floor)]) >= floor
    assert at_least("starlette", (0, 49, 1)) and at_least("pyjwt", (2, 10, 1))
    assert at_least("requests", (2, 32, 4)) and at_least("authlib", (1, 6, 5))
