"""The owner of the embedded chdb data directory: serves it as a ClickHouse server on loopback.

chdb embeds the ClickHouse engine as clickhouse-local, listeners included. The statement
``SYSTEM START LISTEN QUERIES ALL`` opens the HTTP and native-protocol ports that ``config.xml``
in the working directory names, for as long as the query that opened them runs. Clients cannot
tell it from ``clickhouse-server``: the history sink, ``aios stats``, the API, Grafana's ClickHouse
data source and clickhouse-client all use it through the server store (clickhouse-connect) or their
own ClickHouse clients. chdb's public API refuses the statement, so it goes through the private
``_chdb.query`` (chdb 4.4, as pinned); a chdb without it is reported with what to do.

This runs as its own process (``aios serve clickhouse``, started by ``aios up``): chdb allows one
data directory per process, and the listening query holds its thread until the process ends.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from aios.connectors.history.factory import chdb_folder
from aios.connectors.local_owner import claim, live_owner, release
from aios.schemas.errors import AiosError
from aios.streams.errors import StackError
from aios.streams.settings import Settings

log = logging.getLogger("aios.devstack")
# Listen until the process ends: one row a second, never ending.
LISTEN = ("SYSTEM START LISTEN QUERIES ALL; "
          "SELECT sleepEachRow(1) FROM system.numbers SETTINGS max_block_size = 1 FORMAT Null")


def server_config(http_port: int, tcp_port: int) -> str:
    """clickhouse-local's config.xml: loopback only, the two ports, nothing else."""
    return (f"<clickhouse><listen_host>127.0.0.1</listen_host><http_port>{http_port}</http_port>"
            f"<tcp_port>{tcp_port}</tcp_port></clickhouse>\n")


def url_of(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.stores.clickhouse_http_port}"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=1) as reply:  # noqa: S310 - our loopback URL
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def serve_clickhouse(settings: Settings, on_ready: Callable[[str], None], timeout_s: float = 60.0) -> None:
    """Serve the data directory until SIGTERM or SIGINT; ``on_ready(url)`` once it answers and is migrated."""
    from aios.connectors.history.clickhouse_store import ClickHouseServerStore

    folder = chdb_folder(settings.stores.data_dir).resolve()
    owner = live_owner(folder)
    if owner is not None:
        raise StackError(f"{folder} is already served by process {owner.pid} at {owner.url}; stop that `aios up` first")
    url = url_of(settings)
    if _answers(url):
        raise StackError(f"something already answers on {url}: set AIOS_CLICKHOUSE_HTTP_PORT (and "
                         "AIOS_CLICKHOUSE_TCP_PORT) to free ports")
    workdir = settings.stores.data_dir.resolve() / "clickhouse-server"
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.xml").write_text(server_config(settings.stores.clickhouse_http_port,
                                                      settings.stores.clickhouse_tcp_port))
    folder.mkdir(parents=True, exist_ok=True)
    os.chdir(workdir)  # clickhouse-local reads config.xml from the working directory
    ended: list[str] = []
    listener = threading.Thread(target=_listen, args=(folder, ended), name="aios-chdb-listen", daemon=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    listener.start()
    # From here on the listening query holds a thread that Python cannot cancel, and chdb's exit
    # path would wait for it: the process leaves with os._exit, having said why. Every INSERT that
    # returned is already in its data part.
    code = 0
    try:
        deadline = time.monotonic() + timeout_s
        while not _answers(url):
            if ended:
                raise StackError(f"chdb could not serve {folder}: {ended[0]}")
            if time.monotonic() > deadline or stop.is_set():
                raise StackError(f"chdb did not answer on {url} within {timeout_s:.0f} s")
            time.sleep(0.1)
        ClickHouseServerStore(url, ttl_days=settings.stores.history_ttl_days, migrate=True)
        claim(folder, url, tcp_port=settings.stores.clickhouse_tcp_port)
        on_ready(url)
        while not stop.wait(0.5):
            if ended:
                raise StackError(f"chdb stopped serving {folder}: {ended[0]}")
    except AiosError as exc:
        log.error("clickhouse: %s", exc)
        code = 1
    finally:
        release(folder)
        logging.shutdown()
    os._exit(code)


def _listen(folder: Path, ended: list[str]) -> None:
    try:
        from chdb import _chdb  # private: see the module docstring
    except ImportError as exc:
        ended.append(f"this chdb has no _chdb.query ({exc}); install the pinned chdb (pip install -e .)")
        return
    try:
        result = _chdb.query(LISTEN, "TSV", path=str(folder))  # type: ignore[attr-defined]
        ended.append(f"the listening query ended: {result.bytes()[:500]!r}")
    except Exception as exc:  # any chdb failure ends the owner; its message says why
        ended.append(f"{type(exc).__name__}: {exc}")
