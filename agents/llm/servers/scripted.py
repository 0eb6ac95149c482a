"""What every fake vendor server shares: a real HTTP server in a thread, a script of behaviours
consumed one per request, and a record of every request received."""

from __future__ import annotations

import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Generic, Self, TypeVar

B = TypeVar("B")


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server received."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any] = field(default_factory=dict)


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # hundreds of clients connect at once in the router's and capacity tests

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out or closed mid-stream is a scenario under test, not a server bug.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class ScriptedServer(Generic[B]):
    """``start()``, ``stop()``, ``requests``, ``script(*behaviours)``; subclasses add ``base_url``."""

    name = "fake"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._address = (host, port)
        self._lock = threading.Lock()
        self._script: deque[B] = deque()
        self._requests: list[RecordedRequest] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def handler(self) -> type[BaseHTTPRequestHandler]:
        """The request handler class, bound to this fake."""
        raise NotImplementedError

    def default(self) -> B:
        """The behaviour when nothing is scripted."""
        raise NotImplementedError

    def start(self) -> Self:
        """Bind and serve in a daemon thread; returns self."""
        server = QuietServer(self._address, self.handler())
        self._server = server
        # A short poll interval keeps stop() fast: shutdown() waits for the next poll.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, name=self.name, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _url(self, suffix: str = "") -> str:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{suffix}"

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    def script(self, *behaviours: B) -> None:
        """Queue behaviours for the next requests, in order (appends to any already queued)."""
        with self._lock:
            self._script.extend(behaviours)

    def reset(self) -> None:
        """Forget the script and the recorded requests."""
        with self._lock:
            self._script.clear()
            self._requests.clear()

    def _next(self, request: RecordedRequest) -> B:
        with self._lock:
            self._requests.append(request)
            return self._script.popleft() if self._script else self.default()
