"""Who owns an embedded store's folder, and where it serves it.

A chdb data directory or a Qdrant local folder belongs to one process at a time. While ``aios up``
runs, that owner serves the store on loopback, in the store's own protocol (ClickHouse's HTTP
interface, Qdrant's REST API), and says so in an owner file beside the folder
(``<folder>.owner.json``: its pid and URL). Every other process on the machine reads the file and
uses the server client, the same code as against a real server, instead of opening the folder.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OWNER_MARKER = "aios"  # an owner's command line holds it: a recycled pid is not an owner


@dataclass(frozen=True)
class Owner:
    pid: int
    url: str
    extra: dict[str, Any]


def owner_file(folder: Path) -> Path:
    folder = folder.expanduser().resolve()
    return folder.parent / f"{folder.name}.owner.json"


def claim(folder: Path, url: str, **extra: Any) -> Path:
    """Say (atomically) that this process serves ``folder`` at ``url``."""
    path = owner_file(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_suffix(f".{os.getpid()}.tmp")
    scratch.write_text(json.dumps({"pid": os.getpid(), "url": url, **extra}))
    scratch.replace(path)
    return path


def release(folder: Path) -> None:
    """Withdraw this process's claim (another process's claim is left alone)."""
    path = owner_file(folder)
    owner = _read(path)
    if owner is not None and owner.pid == os.getpid():
        path.unlink(missing_ok=True)


def live_owner(folder: Path) -> Owner | None:
    """The process serving ``folder`` now, or None (no claim, or its process is gone)."""
    owner = _read(owner_file(folder))
    if owner is None or not pid_runs(owner.pid, OWNER_MARKER):
        return None
    return owner


def _read(path: Path) -> Owner | None:
    try:
        doc = json.loads(path.read_text())
        return Owner(int(doc.pop("pid")), str(doc.pop("url")), doc)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def pid_runs(pid: int, marker: str) -> bool:
    """True when ``pid`` runs and its command line holds ``marker`` (a recycled pid is not ours)."""
    if not Path("/proc/self").exists():  # no procfs: trust the pid
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return marker.encode() in cmdline
