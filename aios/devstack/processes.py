"""Supervising the local services' processes: pidfiles we own, liveness checks that a recycled pid
cannot fool, waiting for a port, stopping politely then firmly, and the reports ``aios dev`` prints."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from aios.connectors.local_owner import pid_runs
from aios.streams.errors import StackError
from aios.streams.settings import Settings

# Popen objects of brokers this process started: polled so a dead child is reaped, not a zombie.
CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


State = Literal["running", "stopped", "external"]


Action = Literal["started", "kept", "stopped", "none"]


@dataclass(frozen=True)
class ServiceStatus:
    """One service of the stack: what it is now and what the last call did to it."""

    name: str
    state: State
    pid: int | None
    address: str
    action: Action = "none"


@dataclass(frozen=True)
class StackReport:
    """What ``up``, ``down`` or ``status`` found or did, with the wall time it took."""

    services: tuple[ServiceStatus, ...]
    data_dir: str
    elapsed_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Layout:
    """Where the stack's files live: <root>/kafka/kafka.{pid,log}, <root>/redis/redis.{pid,log}."""

    root: Path  # absolute, since redis --daemonize changes directory

    @classmethod
    def of(cls, settings: Settings) -> Layout:
        return cls(settings.stores.data_dir.expanduser().resolve())

    def file(self, service: str, suffix: str) -> Path:
        return self.root / service / f"{service}.{suffix}"


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file, or a note that there is none."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def alive(pid: int, marker: str) -> bool:
    """True when ``pid`` runs and is the service we expect (a recycled pid is not ours)."""
    child = CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        return False
    return pid_runs(pid, marker)


def owned_pid(pidfile: Path, marker: str) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if alive(pid, marker) else None


def raise_open_files_limit() -> None:
    """In the broker's child process: every partition keeps several files open, and a busy test
    machine reaches 20,000 partitions. Raise the limit as far as allowed (the hard limit needs root)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for want in (1 << 20, 262_144, hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))
            return
        except (ValueError, OSError):
            continue


def wait_until(
    ready: Callable[[], bool], dead: Callable[[], bool], timeout_s: float, what: str, log: Path
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if ready():
            return
        if dead():
            raise StackError(f"{what} exited while starting; last lines of {log}:\n{tail(log)}")
        if time.monotonic() > deadline:
            raise StackError(
                f"{what} did not answer within {timeout_s:.0f} s (still starting, or stuck; "
                f"`aios dev down` stops it); last lines of {log}:\n{tail(log)}"
            )
        time.sleep(0.2)


def stop_process(pid: int, marker: str, timeout_s: float) -> None:
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while alive(pid, marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not alive(pid, marker):
            break
    else:
        raise StackError(f"pid {pid} ({marker}) did not exit after SIGKILL: check it with ps -p {pid}")
    child = CHILDREN.pop(pid, None)
    if child is not None:
        child.wait(timeout=5)
