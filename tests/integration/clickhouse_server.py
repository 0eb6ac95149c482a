"""A real ClickHouse server for the server-store tests, run from the chdb wheel AIOS already installs.

No ClickHouse server package can be installed here: Debian's ``clickhouse-server`` is 18.16 (2018,
without the Map type or ``parallel_view_processing``), and PyPI, npm and Maven Central carry none.
chdb embeds the ClickHouse engine as clickhouse-local, listeners included: the statement
``SYSTEM START LISTEN QUERIES ALL`` opens its HTTP and native-protocol ports, read from
``config.xml`` in the working directory, for as long as the query that opened them runs. The
clients (clickhouse-connect over HTTP) cannot tell it from ``clickhouse-server``: the same engine
parses the same SQL and formats. chdb's public API refuses the statement, so this goes through its
private ``_chdb.query`` (chdb 4.4); a chdb that drops it fails the fixture with the reason.

Run as ``python -m tests.integration.clickhouse_server DATA_DIR`` from the directory holding
``config.xml``; ``ClickHouseServer`` does that.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Listen until killed: one row a second, never ending.
SERVE = ("SYSTEM START LISTEN QUERIES ALL; "
         "SELECT sleepEachRow(1) FROM system.numbers SETTINGS max_block_size = 1 FORMAT Null")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ClickHouseServer:
    """Start, stop and restart one server process over one data directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.data = directory / "data"
        self.log = directory / "server.log"
        self.http_port, tcp_port = free_port(), free_port()
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.xml").write_text(
            f"<clickhouse><listen_host>127.0.0.1</listen_host><http_port>{self.http_port}</http_port>"
            f"<tcp_port>{tcp_port}</tcp_port></clickhouse>\n")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout_s: float = 90.0) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", "tests.integration.clickhouse_server", str(self.data)],
                cwd=self.directory, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the ClickHouse server exited ({self.process.returncode}): {self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=2) as reply:  # noqa: S310 - our URL
                    if reply.read().strip() == b"Ok.":
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"the ClickHouse server did not answer on {self.url} in {timeout_s:.0f} s: {self.tail()}")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGKILL)  # as an outage would: no shutdown handshake
        self.process.wait(timeout=30)
        self.process = None

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else "(no log)"


def main(data: str) -> None:
    from chdb import _chdb  # type: ignore[attr-defined]  # private: see the module docstring

    result = _chdb.query(SERVE, "TSV", path=data)
    sys.exit(f"the listening query ended: {result.bytes()!r}")


if __name__ == "__main__":
    main(sys.argv[1])
