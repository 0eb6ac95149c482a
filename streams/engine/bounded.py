"""A blocking client call that may not keep its own timeout, run where its caller can stop waiting.

librdkafka's ``send_offsets_to_transaction`` can block past the timeout it is given, for good, when
the consumer group's coordinator was on a broker that went away: the coordinator request is never
timed out, and a coordinator that was decommissioned is never asked for again (librdkafka issues
5456 and 5511, open in 2.16). The results committer then stalled with nothing in its log (CI runs 19
and 23 of tests/e2e/test_broker_loss.py's controller loss); a stack dump of a run by hand showed it
inside that call four minutes after the broker came back.

So the transactional processor makes its transaction calls through a :class:`BoundedCaller`: the call
runs on the caller's own daemon thread, and when it has not returned well after its own timeout,
:class:`CallStuck` is raised. The processor then replaces the producer (a new one of the same
transactional id fences the stuck one and aborts its transaction). The stuck thread is left behind:
a daemon, so it never holds up the process's exit.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Job = tuple[Callable[[], Any], list[tuple[bool, Any]], threading.Event] | None  # None: end the thread


class CallStuck(Exception):  # noqa: N818 - what happened, as librdkafka's own errors read
    """A call did not return within its limit; it may still be running on the abandoned thread."""


class BoundedCaller:
    """Runs one blocking call at a time on a daemon thread of its own; see the module doc."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[_Job] | None = None
        self.abandoned = 0  # threads left inside a call that never returned

    def call(self, fn: Callable[[], T], limit_s: float, what: str) -> T:
        """``fn()``'s value or exception; :class:`CallStuck` when it has not returned in ``limit_s``."""
        if self._jobs is None:
            self._jobs = self._start()
        box: list[tuple[bool, Any]] = []
        done = threading.Event()
        self._jobs.put((fn, box, done))
        if not done.wait(limit_s):
            # That thread is inside the call for good, maybe: the next call gets a new one, and the
            # old one ends should its call ever return.
            self._jobs.put(None)
            self._jobs = None
            self.abandoned += 1
            raise CallStuck(f"{what} did not return within {limit_s:.0f}s")
        ok, value = box[0]
        if ok:
            return value  # type: ignore[no-any-return]
        raise value

    def close(self) -> None:
        """End the thread (once it is out of its call, if one is running)."""
        if self._jobs is not None:
            self._jobs.put(None)
            self._jobs = None

    def _start(self) -> queue.SimpleQueue[_Job]:
        jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        threading.Thread(target=_serve, args=(jobs,), name=f"{self.name}-calls", daemon=True).start()
        return jobs


def _serve(jobs: queue.SimpleQueue[_Job]) -> None:
    while True:
        job = jobs.get()
        if job is None:
            return
        _run(*job)
        # Nothing of the call may stay referenced while this thread idles: its closure holds a
        # producer, which then outlived the interpreter at exit, and librdkafka's threads called
        # its log callback into a finalized Python (a SIGSEGV in 1 of 3 `aios demo` runs).
        del job


def _run(fn: Callable[[], Any], box: list[tuple[bool, Any]], done: threading.Event) -> None:
    try:
        box.append((True, fn()))
    except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller, raised there
        box.append((False, exc))
    done.set()
