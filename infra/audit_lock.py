"""Audit the versions pinned in uv.lock against PyPI's advisory data (``make audit``, part of ``make lint``).

pip-audit cannot run on machines that reach only the package registries: its PyPI service reads
each release's JSON (``/pypi/<name>/<version>/json``), which such a machine's PyPI access does not
serve, and its OSV service needs api.osv.dev. What they do serve is each project's JSON, whose
``vulnerabilities`` are those of the project's latest release, from the same advisory database
(OSV, fed by the PyPA advisories and GitHub's). So:

- a package locked at its latest release is audited exactly, from the project JSON;
- a package locked below it is audited from its release JSON where that is served; where it is
  not, it is listed as not audited here (a dependency's upper bound, e.g. faust-streaming's click),
  and ``--strict`` fails on it.

Any advisory against a locked version fails the audit, unless ``ALLOWED`` names it with a reason.
Usage: ``python infra/audit_lock.py [uv.lock] [--strict] [--only NAME ...]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PYPI = "https://pypi.org/pypi"
# Advisory ids accepted on purpose: id -> why (the package, and what makes it harmless here).
ALLOWED: dict[str, str] = {}

Fetch = Callable[[str], dict[str, Any] | None]


@dataclass
class Report:
    audited: list[str] = field(default_factory=list)
    vulnerable: dict[str, list[str]] = field(default_factory=dict)  # "name==version" -> advisories
    not_audited: dict[str, str] = field(default_factory=dict)  # "name==version" -> why
    allowed: dict[str, list[str]] = field(default_factory=dict)

    def failed(self, strict: bool) -> bool:
        return bool(self.vulnerable) or (strict and bool(self.not_audited))


def locked(lock: Path) -> list[tuple[str, str]]:
    """(name, version) of every registry package in a uv.lock (the project itself is not one)."""
    data = tomllib.loads(lock.read_text())
    return sorted((p["name"], p["version"]) for p in data.get("package", ())
                  if "registry" in p.get("source", {}) and "version" in p)


def fetch_json(url: str) -> dict[str, Any] | None:
    """PyPI's JSON at ``url``; None for a 404 (not served here, or no such release)."""
    request = urllib.request.Request(  # noqa: S310 - https://pypi.org URLs built here
        url, headers={"Accept": "application/json", "User-Agent": "aios-audit"})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:  # noqa: S310 - a fixed https URL
            body: dict[str, Any] = json.load(response)
            return body
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def _advisories(vulns: Iterable[dict[str, Any]]) -> list[str]:
    out = []
    for v in vulns:
        if v.get("withdrawn"):
            continue
        names = [str(v.get("id", "?")), *(str(a) for a in v.get("aliases") or ())]
        fixed = ", ".join(v.get("fixed_in") or ()) or "no fixed release"
        out.append(f"{' / '.join(names)} (fixed in: {fixed})")
    return out


def audit_one(name: str, version: str, fetch: Fetch) -> tuple[str, list[str] | str]:
    """A package's advisories (a list, maybe empty), or why it could not be audited here (a str)."""
    project = fetch(f"{PYPI}/{name}/json")
    if project is None:
        return name, "PyPI has no such project"
    if project["info"]["version"] == version:
        return name, _advisories(project.get("vulnerabilities") or ())
    release = fetch(f"{PYPI}/{name}/{version}/json")
    if release is None:
        return name, f"locked below the latest release ({project['info']['version']}), and PyPI's release JSON is not served here"
    return name, _advisories(release.get("vulnerabilities") or ())


def audit(packages: list[tuple[str, str]], fetch: Fetch = fetch_json, workers: int = 8) -> Report:
    report = Report()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda p: (p, audit_one(p[0], p[1], fetch)[1]), packages))
    for (name, version), found in results:
        pin = f"{name}=={version}"
        if isinstance(found, str):
            report.not_audited[pin] = found
            continue
        report.audited.append(pin)
        allowed = [a for a in found if a.split(" ", 1)[0] in ALLOWED]
        if allowed:
            report.allowed[pin] = allowed
        if len(allowed) < len(found):
            report.vulnerable[pin] = [a for a in found if a not in allowed]
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Audit uv.lock against PyPI's advisory data.")
    parser.add_argument("lock", nargs="?", default="uv.lock", type=Path)
    parser.add_argument("--strict", action="store_true", help="fail when a package cannot be audited here")
    parser.add_argument("--only", nargs="+", default=None, help="audit these packages of the lock only")
    args = parser.parse_args(argv)
    packages = locked(args.lock)
    if args.only:
        wanted = {n.lower() for n in args.only}
        packages = [p for p in packages if p[0].lower() in wanted]
    try:
        report = audit(packages)
    except (urllib.error.URLError, TimeoutError) as exc:
        print(f"audit: PyPI's JSON API did not answer ({exc}); the lock was not audited", file=sys.stderr)
        return 2
    for pin, found in sorted(report.vulnerable.items()):
        print(f"VULNERABLE {pin}: " + "; ".join(found))
    for pin, found in sorted(report.allowed.items()):
        print(f"allowed    {pin}: " + "; ".join(f"{a} ({ALLOWED[a.split(' ', 1)[0]]})" for a in found))
    for pin, why in sorted(report.not_audited.items()):
        print(f"not audited {pin}: {why}")
    print(f"audit: {len(report.audited)} of {len(packages)} locked packages audited against PyPI's advisory data, "
          f"{len(report.vulnerable)} vulnerable, {len(report.not_audited)} not audited here")
    return 1 if report.failed(args.strict) else 0


if __name__ == "__main__":
    sys.exit(main())
