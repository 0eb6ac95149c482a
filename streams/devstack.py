"""The local dev stack: a single-node KRaft Kafka broker and a Redis server under the data directory.

``up`` starts what is not already answering, ``down`` stops only what we started (pidfiles we own),
``status`` reports each service. No Docker: Kafka runs from Maven Central jars, Redis from Debian.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import redis
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from streams.errors import StackError
from streams.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
MIN_JAVA = 17
MVN_ARGS = ("-q", "-B", "dependency:copy-dependencies", "-DoutputDirectory=lib", "-DincludeScope=runtime")
_KAFKA_MARKER = "kafka.Kafka"
_REDIS_MARKER = "redis"
# Popen objects of brokers this process started: polled so a dead child is reaped, not a zombie.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}

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
class _Layout:
    """Where the stack's files live: <root>/kafka/kafka.{pid,log}, <root>/redis/redis.{pid,log}."""

    root: Path  # absolute, since redis --daemonize changes directory

    @classmethod
    def of(cls, settings: Settings) -> _Layout:
        return cls(settings.data_dir.expanduser().resolve())

    def file(self, service: str, suffix: str) -> Path:
        return self.root / service / f"{service}.{suffix}"


def render_server_properties(
    *, kafka_port: int, controller_port: int, log_dir: Path, partitions: int = 3
) -> str:
    """The broker's server.properties: KRaft combined mode, one node, loopback only, no auto-create."""
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{kafka_port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{kafka_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(log_dir),
        "num.partitions": str(partitions),
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
    }
    lines = ["# Written by streams/devstack.py on every `aios dev up`; edits are overwritten."]
    lines += [f"{key}={value}" for key, value in props.items()]
    return "\n".join(lines) + "\n"


def parse_java_major(version_output: str) -> int | None:
    """Major version from ``java -version`` output ('1.8.0_292' -> 8, '17.0.15' -> 17), else None."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output) or re.search(
        r"^\S+ (\d+)(?:\.(\d+))?", version_output, re.MULTILINE
    )
    if match is None:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2) is not None:
        return int(match.group(2))
    return major


def new_cluster_id() -> str:
    """A KRaft cluster id: a random 16-byte uuid in unpadded base64url, as StorageTool random-uuid makes."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not cid.startswith("-"):  # Kafka avoids ids that look like a command-line flag
            return cid


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file, or a note that there is none."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def _port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _kafka_answers(bootstrap: str, timeout: float = 2.0) -> bool:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        admin.list_topics(timeout=timeout)
    except KafkaException:
        return False
    return True


def _redis_answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _alive(pid: int, marker: str) -> bool:
    """True when ``pid`` runs and is the service we expect (a recycled pid is not ours)."""
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        return False
    proc = Path("/proc") / str(pid)
    if Path("/proc/self").exists():
        try:
            return marker in proc.joinpath("cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owned_pid(pidfile: Path, marker: str) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _alive(pid, marker) else None


Which = Callable[[str], str | None]


def _which_on(path: str | None) -> Which:
    return lambda name: shutil.which(name, path=path)


def find_java(which: Which) -> str:
    """The java binary, checked to be Java 17 or newer."""
    java = which("java")
    if java is None:
        raise StackError(
            f"Java {MIN_JAVA}+ not found on PATH: install openjdk-17-jre-headless "
            "(apt-get install -y openjdk-17-jre-headless)"
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)  # noqa: S603
    major = parse_java_major(out.stderr + out.stdout)
    if major is None or major < MIN_JAVA:
        raise StackError(
            f"Java {MIN_JAVA}+ is needed to run Kafka, but {java} is version {major or 'unknown'}: "
            "install openjdk-17-jre-headless (apt-get install -y openjdk-17-jre-headless) and put it first on PATH"
        )
    return java


def ensure_kafka_jars(kafka_infra: Path, which: Which) -> Path:
    """``infra/kafka/lib`` with the broker's jars, fetched from Maven Central with mvn when missing."""
    lib = kafka_infra / "lib"
    if lib.is_dir() and any(lib.glob("*.jar")):
        return lib
    command = f"cd {kafka_infra} && mvn {' '.join(MVN_ARGS)}"
    mvn = which("mvn")
    if mvn is None:
        raise StackError(
            f"Kafka jars are missing and mvn is not on PATH: apt-get install -y maven, then {command}"
        )
    out = subprocess.run(  # noqa: S603
        [mvn, *MVN_ARGS], cwd=kafka_infra, capture_output=True, text=True, timeout=900
    )
    if out.returncode != 0 or not any(lib.glob("*.jar")):
        log = "\n".join((out.stdout + out.stderr).splitlines()[-20:])
        raise StackError(
            f"fetching the Kafka jars failed (mvn exit {out.returncode}); retry: {command}\n{log}"
        )
    return lib


def _statuses(settings: Settings, layout: _Layout, actions: Sequence[Action]) -> tuple[ServiceStatus, ...]:
    redis_address = f"127.0.0.1:{settings.redis_port}"
    found = (
        ("kafka", layout.file("kafka", "pid"), _KAFKA_MARKER, settings.kafka_port, settings.kafka_bootstrap),
        ("redis", layout.file("redis", "pid"), _REDIS_MARKER, settings.redis_port, redis_address),
    )
    out = []
    for (name, pidfile, marker, port, address), action in zip(found, actions, strict=True):
        pid = _owned_pid(pidfile, marker)
        state: State = (
            "running" if pid is not None else "external" if _answers(settings, name, port) else "stopped"
        )
        out.append(ServiceStatus(name, state, pid, address, action))
    return tuple(out)


def _answers(settings: Settings, name: str, port: int) -> bool:
    if not _port_open(port):
        return False
    return _kafka_answers(settings.kafka_bootstrap) if name == "kafka" else _redis_answers(settings.redis_url)


def _more_open_files() -> None:
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


def _start_kafka(settings: Settings, layout: _Layout, kafka_infra: Path, java: str, lib: Path) -> int:
    if _port_open(settings.kafka_controller_port):
        raise StackError(
            f"the KRaft controller port {settings.kafka_controller_port} is already in use: "
            "free it or set AIOS_KAFKA_CONTROLLER_PORT to a free port"
        )
    kafka_dir = layout.root / "kafka"
    log_dir = kafka_dir / "data"
    log_dir.mkdir(parents=True, exist_ok=True)
    props = kafka_dir / "server.properties"
    props.write_text(
        render_server_properties(
            kafka_port=settings.kafka_port,
            controller_port=settings.kafka_controller_port,
            log_dir=log_dir,
            partitions=settings.topic_partitions,
        )
    )
    classpath = str(lib / "*")  # java expands the wildcard itself; no shell involved
    log4j = f"-Dlog4j.configuration=file:{kafka_infra / 'log4j.properties'}"
    if not (log_dir / "meta.properties").exists():
        fmt = [java, log4j, "-cp", classpath, "kafka.tools.StorageTool", "format"]
        out = subprocess.run(  # noqa: S603
            [*fmt, "-t", new_cluster_id(), "-c", str(props)], capture_output=True, text=True, timeout=120
        )
        if out.returncode != 0:
            raise StackError(
                f"formatting Kafka storage in {log_dir} failed: {(out.stdout + out.stderr).strip()}\n"
                f"remove {log_dir} if it holds nothing you need, then run up again"
            )
    with layout.file("kafka", "log").open("ab") as log:
        proc = subprocess.Popen(  # noqa: S603
            [
                java,
                f"-Xmx{settings.kafka_heap_mb}m",
                "-Djava.awt.headless=true",
                log4j,
                "-cp",
                classpath,
                "kafka.Kafka",
                str(props),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=kafka_dir,
            start_new_session=True,  # outlives this process and ignores its Ctrl-C
            preexec_fn=_more_open_files,
        )
    _CHILDREN[proc.pid] = proc
    layout.file("kafka", "pid").write_text(f"{proc.pid}\n")
    return proc.pid


def _start_redis(settings: Settings, layout: _Layout, redis_server: str) -> None:
    redis_dir, pidfile, log = layout.root / "redis", layout.file("redis", "pid"), layout.file("redis", "log")
    redis_dir.mkdir(parents=True, exist_ok=True)
    argv = [redis_server, "--port", str(settings.redis_port), "--bind", "127.0.0.1", "--dir", str(redis_dir)]
    argv += ["--daemonize", "yes", "--pidfile", str(pidfile), "--logfile", str(log), "--save", ""]
    argv += ["--appendonly", "no"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30)  # noqa: S603
    if out.returncode != 0:
        raise StackError(
            f"redis-server exited with {out.returncode}: {(out.stdout + out.stderr).strip()}\n{tail(log)}"
        )


def _wait(
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


@contextlib.contextmanager
def _locked(layout: _Layout) -> Iterator[None]:
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
    layout = _Layout.of(settings)
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
    layout = _Layout.of(settings)
    kafka_infra = (infra_dir or REPO_ROOT / "infra") / "kafka"
    which = _which_on(path)
    with _locked(layout):
        kafka, redis_ = _statuses(settings, layout, ("none", "none"))
        for service, port, env in (
            (kafka, settings.kafka_port, "AIOS_KAFKA_BOOTSTRAP=127.0.0.1:<free port>"),
            (redis_, settings.redis_port, "AIOS_REDIS_URL=redis://127.0.0.1:<free port>/0"),
        ):
            if service.state == "stopped" and _port_open(port):
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

        kafka_pid = _start_kafka(settings, layout, kafka_infra, *java_and_lib) if java_and_lib else kafka.pid
        if redis_server is not None:
            _start_redis(settings, layout, redis_server)
        if kafka.state != "external":
            _wait(
                lambda: _answers(settings, "kafka", settings.kafka_port),
                lambda: not _alive(kafka_pid or 0, _KAFKA_MARKER),
                kafka_timeout_s,
                "Kafka",
                layout.file("kafka", "log"),
            )
        if redis_.state != "external":
            _wait(
                lambda: (
                    _answers(settings, "redis", settings.redis_port) and layout.file("redis", "pid").exists()
                ),
                lambda: False,  # redis daemonizes itself; a failed start shows as a timeout with its log
                redis_timeout_s,
                "Redis",
                layout.file("redis", "log"),
            )
        actions: list[Action] = ["started" if java_and_lib else "kept", "started" if redis_server else "kept"]
        services = _statuses(settings, layout, actions)
    return StackReport(services, str(layout.root), round(time.monotonic() - started, 3))


def _stop(pid: int, marker: str, timeout_s: float) -> None:
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while _alive(pid, marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not _alive(pid, marker):
            break
    else:
        raise StackError(f"pid {pid} ({marker}) did not exit after SIGKILL: check it with ps -p {pid}")
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        child.wait(timeout=5)


def down(settings: Settings, *, timeout_s: float = 30.0) -> StackReport:
    """Stop the services this data directory started (SIGTERM, then SIGKILL after ``timeout_s``)."""
    started = time.monotonic()
    layout = _Layout.of(settings)
    actions: list[Action] = []
    with _locked(layout):
        for pidfile, marker in (
            (layout.file("kafka", "pid"), _KAFKA_MARKER),
            (layout.file("redis", "pid"), _REDIS_MARKER),
        ):
            pid = _owned_pid(pidfile, marker)
            if pid is not None:
                _stop(pid, marker, timeout_s)
            pidfile.unlink(missing_ok=True)
            actions.append("none" if pid is None else "stopped")
        services = _statuses(settings, layout, actions)
    return StackReport(services, str(layout.root), round(time.monotonic() - started, 3))
