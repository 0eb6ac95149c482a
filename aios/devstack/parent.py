"""A supervised child's tie to its supervisor, apart from the supervisor itself: every ``aios`` command
checks it first, and the supervisor's module (settings, metrics, log files) cost a third of a
second of imports that ``aios --help`` or ``aios status`` had no use for."""

from __future__ import annotations

import os
import signal
import sys

SUPERVISOR_ENV = "AIOS_SUPERVISOR_PID"  # private handshake: a child follows its supervisor's death


def follow_supervisor() -> None:
    """In a supervised child: end with the supervisor. The children run in a session of their own
    (so a terminal's Ctrl-C reaches only the supervisor), and Linux can send a signal to a child
    whose parent dies; if the parent is already gone, leave now."""
    supervisor = os.environ.get(SUPERVISOR_ENV)
    if not supervisor:
        return
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
    if str(os.getppid()) != supervisor:
        raise SystemExit(f"aios: the supervisor (pid {supervisor}) is gone; not starting")
