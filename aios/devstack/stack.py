"""The local dev stack: a single-node KRaft Kafka broker and a Redis server under the data directory.

``up`` starts what is not already answering, ``down`` stops only what we started (pidfiles we own),
``status`` reports each service. No Docker: Kafka runs from Maven Central jars, Redis from Debian.
"""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from aios.devstack.kafka_broker import KAFKA_MARKER, kafka_answers, start_kafka
from aios.devstack.processes import (
    Action,
    Layout,
    ServiceStatus,
    StackReport,
    State,
    alive,
    owned_pid,
    port_open,
    stop_process,
    wait_until,
)
from aios.devstack.redis_server import REDIS_MARKER, redis_answers, start_redis
from aios.devstack.toolchain import REPO_ROOT, ensure_kafka_jars, find_java, which_on
from aios.streams.errors import StackError
from aios.streams.settings import Settings


def _statuses(settings: Settings, layout: Layout, actions: Sequence[Action]) -> tuple[ServiceStatus, ...]:
    redis_address = f"127.0.0.1:{settings.stores.redis_port}"
    found = (
        ("kafka", layout.file("kafka", "pid"), KAFKA_MARKER, settings.kafka.port, settings.kafka.bootstrap),
        ("redis", layout.file("redis", "pid"), REDIS_MARKER, settings.stores.redis_port, redis_address),
    )
    out = []
    for (name, pidfile, marker, port, address), action in zip(found, actions, strict=True):
        pid = owned_pid(pidfile, marker)
        state: State = (
            "running" if pid is not None else "external" if _answers(settings, name, port) else "stopped"
        )
        out.append(ServiceStatus(name, state, pid, address, action))
    return tuple(out)


def _answers(settings: Settings, name: str, port: int) -> bool:
    if not port_open(port):
        return False
    return kafka_answers(settings.kafka.bootstrap) if name == "kafka" else redis_answers(settings.stores.redis_url)


@contextlib.contextmanager
def _locked(layout: Layout) -> Iterator[None]:
    """One ``up`` or ``down`` at a time per data directory."""
    layout.root.mkdir(parents=True, exist_ok=True)
    with (layout.root / ".devstack.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def status(settings: Settings) -> StackReport:
    """Each service's state (running = ours, external = answering without our pidfile, stopped)."""
    started = time.monotonic()
    layout = Layout.of(settings)
    services = _statuses(settings, layout, ("none", "none"))
    return StackReport(services, str(layout.root), round(time.monotonic() - started, 3))


def up(
    settings: Settings,
    *,
    infra_dir: Path | None = None,
    path: str | None = None,
    kafka_timeout_s: float = 60.0,
    redis_timeout_s: float = 15.0,
) -> StackReport:
    """Start Kafka and Redis unless they already answer, and wait until both do.

    ``path`` replaces PATH when looking up java, mvn and redis-server; ``infra_dir`` replaces the
    repository's ``infra/`` (holding ``kafka/pom.xml``, ``kafka/log4j.properties`` and ``kafka/lib``).
    """
    started = time.monotonic()
    layout = Layout.of(settings)
    kafka_infra = (infra_dir or REPO_ROOT / "infra") / "kafka"
    which = which_on(path)
    with _locked(layout):
        kafka, redis_ = _statuses(settings, layout, ("none", "none"))
        for service, port, env in (
            (kafka, settings.kafka.port, "AIOS_KAFKA_BOOTSTRAP=127.0.0.1:<free port>"),
            (redis_, settings.stores.redis_port, "AIOS_REDIS_URL=redis://127.0.0.1:<free port>/0"),
        ):
            if service.state == "stopped" and port_open(port):
                raise StackError(
                    f"port {port} is in use by something that does not answer as {service.name}: "
                    f"free it or set {env}"
                )
        # Check every prerequisite before starting anything, so a failure leaves nothing half-up.
        java_and_lib = None
        if kafka.state == "stopped":
            java_and_lib = find_java(which), ensure_kafka_jars(kafka_infra, which)
        redis_server = None
        if redis_.state == "stopped":
            redis_server = which("redis-server")
            if redis_server is None:
                raise StackError("redis-server not found: apt-get install -y redis-server")

        kafka_pid = start_kafka(settings, layout, kafka_infra, *java_and_lib) if java_and_lib else kafka.pid
        if redis_server is not None:
            start_redis(settings, layout, redis_server)
        if kafka.state != "external":
            wait_until(
                lambda: _answers(settings, "kafka", settings.kafka.port),
                lambda: not alive(kafka_pid or 0, KAFKA_MARKER),
                kafka_timeout_s,
                "Kafka",
                layout.file("kafka", "log"),
            )
        if redis_.state != "external":
            wait_until(
                lambda: (
                    _answers(settings, "redis", settings.stores.redis_port) and layout.file("redis", "pid").exists()
                ),
                lambda: False,  # redis daemonizes itself; a failed start shows as a timeout with its log
                redis_timeout_s,
                "Redis",
                layout.file("redis", "log"),
            )
        actions: list[Action] = ["started" if java_and_lib else "kept", "started" if redis_server else "kept"]
        services = _statuses(settings, layout, actions)
    return StackReport(services, str(layout.root), round(time.monotonic() - started, 3))


def down(settings: Settings, *, timeout_s: float = 30.0) -> StackReport:
    """Stop the services this data directory started (SIGTERM, then SIGKILL after ``timeout_s``)."""
    started = time.monotonic()
    layout = Layout.of(settings)
    actions: list[Action] = []
    with _locked(layout):
        for pidfile, marker in (
            (layout.file("kafka", "pid"), KAFKA_MARKER),
            (layout.file("redis", "pid"), REDIS_MARKER),
        ):
            pid = owned_pid(pidfile, marker)
            if pid is not None:
                stop_process(pid, marker, timeout_s)
            pidfile.unlink(missing_ok=True)
            actions.append("none" if pid is None else "stopped")
        services = _statuses(settings, layout, actions)
    return StackReport(services, str(layout.root), round(time.monotonic() - started, 3))
