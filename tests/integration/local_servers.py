"""Real servers the integration tests start themselves: ClickHouse over HTTP and a schema registry.

**ClickHouse.** No ClickHouse server package can be installed here: Debian's ``clickhouse-server``
is 18.16 (2018, without the Map type or ``parallel_view_processing``), and PyPI, npm and Maven
Central carry none. chdb embeds the ClickHouse engine as clickhouse-local, listeners included: the
statement ``SYSTEM START LISTEN QUERIES ALL`` opens its HTTP and native-protocol ports, read from
``config.xml`` in the working directory, for as long as the query that opened them runs. Clients
(clickhouse-connect over HTTP) cannot tell it from ``clickhouse-server``: the same engine parses
the same SQL and formats. chdb's public API refuses the statement, so this goes through its private
``_chdb.query`` (chdb 4.4); a chdb that drops it fails the fixture with the reason. Run as
``python -m tests.integration.local_servers clickhouse DATA_DIR`` from the directory holding
``config.xml``; ``ClickHouseServer`` does that.

**Schema registry.** AxonOps Schema Registry, a Go server of the Confluent Schema Registry API,
built by ``infra/schema-registry/build.sh`` (``make test`` runs it), in memory.

**Outages.** ``TcpProxy`` stands between clients and a server and can refuse connections (and cut
the open ones) while the server keeps its state: an in-memory registry restarted would forget its
schema ids. ``RedisServer`` is a redis-server of the test's own on a free port, to stop and start:
never the shared one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REGISTRY_BINARY = ROOT / "infra" / "schema-registry" / "bin" / "schema-registry"
# Listen until killed: one row a second, never ending.
SERVE_CLICKHOUSE = ("SYSTEM START LISTEN QUERIES ALL; "
                    "SELECT sleepEachRow(1) FROM system.numbers SETTINGS max_block_size = 1 FORMAT Null")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalServer:
    """One server process: started, checked until ``ready_path`` answers, killed, restarted."""

    name = "server"
    ready_path = "/"

    def __init__(self, directory: Path, port: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.port = port
        self.log = directory / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def start(self, timeout_s: float = 90.0) -> None:
        argv, env = self.command()
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(argv, cwd=self.directory, env={**os.environ, **env},  # noqa: S603
                                            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the {self.name} exited ({self.process.returncode}): {self.tail()}")
            try:
                with urllib.request.urlopen(self.url + self.ready_path, timeout=2) as reply:  # noqa: S310 - ours
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"the {self.name} did not answer on {self.url} in {timeout_s:.0f} s: {self.tail()}")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGKILL)  # as an outage would: no shutdown handshake
        self.process.wait(timeout=30)
        self.process = None

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else "(no log)"


class ClickHouseServer(LocalServer):
    """The ClickHouse engine of chdb, listening on HTTP; its data directory survives restarts."""

    name = "ClickHouse server"
    ready_path = "/ping"

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, free_port())
        (directory / "config.xml").write_text(
            f"<clickhouse><listen_host>127.0.0.1</listen_host><http_port>{self.port}</http_port>"
            f"<tcp_port>{free_port()}</tcp_port></clickhouse>\n")

    def command(self) -> tuple[list[str], dict[str, str]]:
        return ([sys.executable, "-m", "tests.integration.local_servers", "clickhouse", str(self.directory / "data")],
                {"PYTHONPATH": str(ROOT)})


class SchemaRegistry(LocalServer):
    """AxonOps Schema Registry with in-memory storage: every start is an empty registry."""

    name = "schema registry"
    ready_path = "/subjects"

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, free_port())

    def command(self) -> tuple[list[str], dict[str, str]]:
        if not REGISTRY_BINARY.exists():
            raise RuntimeError(f"{REGISTRY_BINARY} is missing: run `make test`, or bash infra/schema-registry/build.sh")
        return ([str(REGISTRY_BINARY)], {
            "SCHEMA_REGISTRY_STORAGE_TYPE": "memory", "SCHEMA_REGISTRY_HOST": "127.0.0.1",
            "SCHEMA_REGISTRY_PORT": str(self.port),
            "SCHEMA_REGISTRY_COMPATIBILITY_LEVEL": "BACKWARD",  # Confluent's default, stated
        })


class RedisServer:
    """A redis-server of the test's own (no persistence), on a port that survives a restart."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 30.0) -> None:
        with (self.directory / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(self.directory)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.1)
        raise RuntimeError(f"redis-server did not answer on port {self.port} in {timeout_s:.0f} s")

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)  # as an outage would
            self.process.wait(timeout=30)
            self.process = None


class TcpProxy:
    """Forwards a local port to ``target_port``. ``down()`` refuses new connections and cuts the open
    ones, as a network outage would; ``up()`` serves again on the same port."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):  # wakes the accepting thread: close() alone does not
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            for conn in self._open:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by down()
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open |= {client, server}
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for conn in (src, dst):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


def serve_clickhouse(data: str) -> None:
    from chdb import _chdb  # type: ignore[attr-defined]  # private: see the module docstring

    result = _chdb.query(SERVE_CLICKHOUSE, "TSV", path=data)
    sys.exit(f"the listening query ended: {result.bytes()!r}")


if __name__ == "__main__":
    if sys.argv[1:2] != ["clickhouse"] or len(sys.argv) != 3:
        sys.exit("usage: python -m tests.integration.local_servers clickhouse DATA_DIR")
    serve_clickhouse(sys.argv[2])
