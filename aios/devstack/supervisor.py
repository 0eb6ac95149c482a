"""``aios up``: every processor group as its own OS process, supervised.

Each group runs as in distributed mode (``aios worker NAME``, ``aios api``), one consumer group
each, so no two share a GIL and one crash takes only itself down. The supervisor:

- starts the owners of the embedded stores first (``aios serve clickhouse``, and ``aios serve
  qdrant`` with vector memory), waits until they answer, and points every other process at them;
- starts the processors and the API, and says ``aios: ready`` once all are;
- restarts a process that exits unasked, after 0.5 s doubling up to AIOS_RESTART_BACKOFF_MAX_S
  (reset after a minute of running), logging it and counting ``aios_process_restarts_total``;
- on SIGTERM or Ctrl-C (the children run in their own session, so the terminal's SIGINT reaches
  the supervisor alone) stops the intake and processors, which drain, then the stores, all within
  AIOS_DRAIN_TIMEOUT_S; what is still running at the deadline is killed. A second Ctrl-C kills at once;
- collects every line the processes log into one file (``aios logs``) and serves one /metrics
  merging theirs (:mod:`aios.devstack.metrics_merge`).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aios.devstack.logfile import FileHandler, LogFile, parse_line
from aios.devstack.metrics_merge import MergedMetricsServer
from aios.devstack.parent import SUPERVISOR_ENV
from aios.streams.errors import StackError
from aios.streams.metrics import PROCESS_RESTARTS, PROCESS_UP
from aios.streams.settings import Settings

log = logging.getLogger("aios.supervisor")
log.setLevel(logging.INFO)  # the file keeps the supervisor's story; the terminal shows AIOS_LOG_LEVEL

READY_LINE = "aios: ready"
FIRST_BACKOFF_S = 0.5
HEALTHY_AFTER_S = 60.0
STORE_STOP_S = 5.0  # what the stores get after the processors, out of the drain timeout


@dataclass(frozen=True)
class ChildSpec:
    """One supervised process: its name, its ``aios`` arguments, and whether it owns a store."""

    name: str
    argv: tuple[str, ...]
    store: bool = False


def plan(settings: Settings, *, api: bool) -> list[ChildSpec]:
    """The processes ``aios up`` runs for ``settings``: store owners first."""
    s = settings
    specs: list[ChildSpec] = []
    if not s.stores.clickhouse_url:
        specs.append(ChildSpec("clickhouse", ("serve", "clickhouse"), store=True))
    if s.memory.vector_memory and not s.stores.qdrant_url:
        specs.append(ChildSpec("qdrant", ("serve", "qdrant"), store=True))
    specs += [ChildSpec("orchestrator", ("worker", "orchestrator")), ChildSpec("results", ("worker", "results"))]
    groups = s.processing.agent_processes()
    for i, roles in enumerate(groups):
        name = "agents" if len(groups) == 1 else f"agents-{i + 1}"
        specs.append(ChildSpec(name, ("worker", "agents", *[arg for r in roles for arg in ("--role", r)])))
    specs += [ChildSpec(n, ("worker", n)) for n in ("memory", "history", "json-ingress", "json-egress")]
    if api:
        specs.append(ChildSpec("api", ("api",)))
    return specs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Child:
    spec: ChildSpec
    proc: subprocess.Popen[bytes] | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    pump: threading.Thread | None = None
    metrics_port: int = 0
    started_at: float = 0.0
    restarts: int = 0
    backoff_s: float = FIRST_BACKOFF_S
    restart_at: float | None = None
    last_lines: list[str] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Supervisor:
    """Runs the children of :func:`plan` until :meth:`request_stop`; see the module docstring."""

    def __init__(self, settings: Settings, specs: list[ChildSpec], *, terminal: Callable[[str], None],
                 ready_timeout_s: float = 180.0) -> None:
        self.settings = settings
        self.children = [Child(spec) for spec in specs]
        self.say = terminal
        self.ready_timeout_s = ready_timeout_s
        self.logs = LogFile(settings)
        self.stop_requested = threading.Event()
        self.kill_now = threading.Event()
        self.store_env: dict[str, str] = {}
        drain = settings.processing.drain_timeout_s
        # Children drain in less than the whole budget, so their outputs are flushed and
        # committed before the supervisor's deadline.
        self.child_drain_s = max(1.0, drain - min(STORE_STOP_S + 2.0, drain / 2))
        self._file_handler = FileHandler(self.logs)
        self._metrics: MergedMetricsServer | None = None

    # -- the whole run --------------------------------------------------------------------------

    def run(self) -> int:
        """Start everything, supervise until asked to stop, stop everything; the exit code."""
        logging.getLogger().addHandler(self._file_handler)
        obs = self.settings.observability
        if obs.metrics_port:
            self._metrics = MergedMetricsServer(
                obs.metrics_host, obs.metrics_port,
                lambda: {c.spec.name: c.metrics_port for c in self.children if c.running and c.metrics_port})
        try:
            stores = [c for c in self.children if c.spec.store]
            self._start_all(stores)
            self.store_env = self._store_addresses()
            self._start_all([c for c in self.children if not c.spec.store])
            if self.stop_requested.is_set():
                return 0
            self.say(f"{READY_LINE}: {len(self.children)} processes "
                     f"({', '.join(c.spec.name for c in self.children)}); logs in {self.logs.path}")
            log.info("supervisor: ready with %d processes", len(self.children))
            while not self.stop_requested.wait(0.2):
                self._tend()
            return 0
        except StackError as exc:
            log.error("supervisor: %s", exc)
            self.say(f"aios: {exc}")
            return 1
        finally:
            self._stop_all()
            if self._metrics is not None:
                self._metrics.close()
            logging.getLogger().removeHandler(self._file_handler)
            self.logs.close()

    def request_stop(self) -> None:
        """SIGTERM or Ctrl-C: drain and stop; asked twice, kill at once."""
        if self.stop_requested.is_set():
            self.kill_now.set()
        self.stop_requested.set()

    # -- starting -------------------------------------------------------------------------------

    def _store_addresses(self) -> dict[str, str]:
        from aios.connectors.history.factory import chdb_folder
        from aios.connectors.local_owner import live_owner
        from aios.streams.engine.runtime import qdrant_folder

        env: dict[str, str] = {}
        for child in self.children:
            if not child.spec.store:
                continue
            folder = chdb_folder(self.settings.stores.data_dir) if child.spec.name == "clickhouse" \
                else qdrant_folder(self.settings)
            owner = live_owner(folder)
            if owner is None:
                raise StackError(f"the {child.spec.name} owner said ready but holds no claim on {folder}")
            env["AIOS_CLICKHOUSE_URL" if child.spec.name == "clickhouse" else "AIOS_QDRANT_URL"] = owner.url
        return env

    def _start_all(self, children: list[Child]) -> None:
        for child in children:
            self._spawn(child)
        deadline = time.monotonic() + self.ready_timeout_s
        for child in children:
            while not child.ready.wait(0.1):
                if self.stop_requested.is_set():
                    return
                if not child.running:
                    raise StackError(f"{child.spec.name} exited while starting (code {self._code(child)}); "
                                     "its last lines:\n  " + "\n  ".join(child.last_lines[-15:]))
                if time.monotonic() > deadline:
                    raise StackError(f"{child.spec.name} was not ready within {self.ready_timeout_s:.0f} s; "
                                     f"see `aios logs --processor {child.spec.name}`")

    def _env(self, child: Child) -> dict[str, str]:
        level = self.settings.observability.log_level
        env = {**os.environ, **self.store_env,
               # Children log JSON to the supervisor, which writes the file and the terminal; at
               # least INFO, so `aios logs` has the story even when the terminal shows warnings only.
               "AIOS_LOG_FORMAT": "json", "AIOS_LOG_LEVEL": "DEBUG" if level == "DEBUG" else "INFO",
               "AIOS_DRAIN_TIMEOUT_S": str(self.child_drain_s), SUPERVISOR_ENV: str(os.getpid()),
               "AIOS_METRICS_PORT": str(child.metrics_port), "AIOS_METRICS_HOST": "127.0.0.1",
               "PYTHONUNBUFFERED": "1"}
        return env

    def _spawn(self, child: Child) -> None:
        child.ready.clear()
        child.metrics_port = free_port() if self.settings.observability.metrics_port else 0
        argv = [sys.executable, "-m", "aios.cli", *child.spec.argv]
        # Our own interpreter running our own CLI with fixed arguments.
        child.proc = subprocess.Popen(  # noqa: S603
            argv, env=self._env(child), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True)
        child.started_at = time.monotonic()
        child.restart_at = None
        child.pump = threading.Thread(target=self._pump, args=(child, child.proc), daemon=True,
                                      name=f"aios-log-{child.spec.name}")
        child.pump.start()
        PROCESS_UP.labels(child.spec.name).set(1)
        log.info("supervisor: started %s (pid %d): aios %s", child.spec.name, child.proc.pid, " ".join(child.spec.argv))

    def _pump(self, child: Child, proc: subprocess.Popen[bytes]) -> None:
        """Every output line of one child into the log; ends at the child's end (EOF)."""
        assert proc.stdout is not None  # noqa: S101 - spawned with a pipe
        for raw in proc.stdout:
            line = raw.decode(errors="replace")
            doc = parse_line(child.spec.name, line)
            if doc["logger"] == "stderr" and doc["message"].startswith(READY_LINE):
                child.ready.set()
            child.last_lines = [*child.last_lines[-30:], str(doc["message"])]
            self.logs.write(doc)
        proc.stdout.close()

    # -- supervising ----------------------------------------------------------------------------

    def _tend(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.proc is None or child.running:
                continue
            if child.restart_at is None:
                self._exited(child, now)
            elif now >= child.restart_at:
                self._restart(child)

    def _exited(self, child: Child, now: float) -> None:
        PROCESS_UP.labels(child.spec.name).set(0)
        if now - child.started_at >= HEALTHY_AFTER_S:
            child.backoff_s = FIRST_BACKOFF_S
        child.restart_at = now + child.backoff_s
        log.error("supervisor: %s (pid %d) exited with code %s; restarting in %.1f s (restart %d); its last lines: %s",
                  child.spec.name, child.proc.pid if child.proc else -1, self._code(child), child.backoff_s,
                  child.restarts + 1, " | ".join(child.last_lines[-5:]))
        child.backoff_s = min(child.backoff_s * 2, self.settings.processing.restart_backoff_max_s)

    def _restart(self, child: Child) -> None:
        if child.pump is not None:
            child.pump.join(timeout=5)
        child.restarts += 1
        PROCESS_RESTARTS.labels(child.spec.name).inc()
        self._spawn(child)

    @staticmethod
    def _code(child: Child) -> str:
        code = child.proc.poll() if child.proc is not None else None
        if code is not None and code < 0:
            return f"{code} ({signal.Signals(-code).name})"
        return str(code)

    # -- stopping -------------------------------------------------------------------------------

    def _stop_all(self) -> None:
        """Processors first (they drain), then the stores, within AIOS_DRAIN_TIMEOUT_S in all."""
        deadline = time.monotonic() + self.settings.processing.drain_timeout_s
        processors = [c for c in self.children if not c.spec.store]
        stores = [c for c in self.children if c.spec.store]
        self._stop(processors, deadline - STORE_STOP_S)
        self._stop(stores, deadline)
        for child in self.children:
            if child.pump is not None:
                child.pump.join(timeout=5)
            PROCESS_UP.labels(child.spec.name).set(0)
        log.info("supervisor: stopped")

    def _stop(self, children: list[Child], deadline: float) -> None:
        running = [c for c in children if c.running]
        for child in running:
            log.info("supervisor: stopping %s (pid %d)", child.spec.name, child.proc.pid if child.proc else -1)
            self._signal(child, signal.SIGTERM)
        while any(c.running for c in running) and time.monotonic() < deadline and not self.kill_now.is_set():
            time.sleep(0.1)
        for child in running:
            if child.running:
                log.warning("supervisor: %s did not stop in time; killed", child.spec.name)
                self._signal(child, signal.SIGKILL)
            if child.proc is not None:
                child.proc.wait(timeout=10)

    @staticmethod
    def _signal(child: Child, sig: signal.Signals) -> None:
        if child.proc is not None and child.proc.poll() is None:
            try:
                child.proc.send_signal(sig)
            except ProcessLookupError:
                pass
