"""The supervisor's log: every line of every process ``aios up`` runs, as JSON lines in
``<data dir>/logs/aios.log`` (rotated at 20 MB, one old file kept), and the lines at
AIOS_LOG_LEVEL and above on the terminal. ``aios logs`` reads and follows the file.

Children log JSON (streams.logs); anything else they print (a crash before logging is set up)
is kept as a WARNING line, and the ``aios: …`` lines they print for people as INFO.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from aios.streams.logs import as_document, level_number, render_text
from aios.streams.settings import Settings

MAX_BYTES = 20 * 1024 * 1024
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def log_path(settings: Settings) -> Path:
    return settings.stores.data_dir.expanduser().resolve() / "logs" / "aios.log"


def parse_line(process: str, line: str) -> dict[str, Any]:
    """A child's output line as a log document (its JSON, or the text wrapped as one)."""
    text = _ANSI.sub("", line.rstrip("\n"))
    if text.startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        if isinstance(doc, dict) and "message" in doc:
            doc["process"] = process
            return doc
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
    level = "INFO" if text.startswith("aios: ") else "WARNING"
    return {"time": stamp, "level": level, "process": process, "processor": None, "logger": "stderr",
            "message": text}


class LogFile:
    """Appends documents to the log file (thread-safe) and echoes those at the level to ``terminal``."""

    def __init__(self, settings: Settings, terminal: TextIO | None = None) -> None:
        self.path = log_path(settings)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.level = level_number(settings.observability.log_level)
        self.json = settings.observability.log_format == "json"
        self.terminal = terminal if terminal is not None else sys.stderr
        self._lock = threading.Lock()
        self._file = self.path.open("a", encoding="utf-8")

    def write(self, doc: dict[str, Any], *, echo: bool = True) -> None:
        line = json.dumps(doc, ensure_ascii=False, default=str)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()
            if self._file.tell() > MAX_BYTES:
                self._rotate()
            if echo and level_number(str(doc.get("level", "INFO"))) >= self.level:
                self.terminal.write((line if self.json else render_text(doc)) + "\n")
                self.terminal.flush()

    def _rotate(self) -> None:
        self._file.close()
        self.path.replace(self.path.with_name(self.path.name + ".1"))
        self._file = self.path.open("a", encoding="utf-8")

    def close(self) -> None:
        with self._lock:
            self._file.close()


class FileHandler(logging.Handler):
    """The supervisor's own log records into the file (the terminal gets them from streams.logs)."""

    def __init__(self, sink: LogFile) -> None:
        super().__init__()
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.write(as_document(record), echo=False)


def matches(doc: dict[str, Any], processor: str | None, task: str | None) -> bool:
    if processor is not None and processor not in (doc.get("process"), doc.get("processor")) \
            and not str(doc.get("processor") or "").startswith(f"{processor}:"):
        return False
    return task is None or doc.get("task_id") == task


def read(path: Path, *, processor: str | None = None, task: str | None = None) -> list[dict[str, Any]]:
    """Every matching document of the log (the rotated file first)."""
    out = []
    for part in (path.with_name(path.name + ".1"), path):
        try:
            with part.open(encoding="utf-8", errors="replace") as lines:
                out += [doc for doc in map(_load, lines) if doc is not None and matches(doc, processor, task)]
        except FileNotFoundError:
            continue
    return out


def follow(path: Path, stop: threading.Event, *, processor: str | None = None,
           task: str | None = None) -> Iterator[dict[str, Any]]:
    """Matching documents appended from now on, until ``stop`` is set (survives a rotation)."""
    handle = _open_at_end(path)
    while not stop.is_set():
        line = handle.readline() if handle is not None else ""
        if line:
            doc = _load(line)
            if doc is not None and matches(doc, processor, task):
                yield doc
            continue
        stop.wait(0.2)
        if handle is None or (path.exists() and path.stat().st_ino != _inode(handle)):
            if handle is not None:
                handle.close()
            handle = path.open(encoding="utf-8", errors="replace") if path.exists() else None
    if handle is not None:
        handle.close()


def _open_at_end(path: Path) -> TextIO | None:
    if not path.exists():
        return None
    handle = path.open(encoding="utf-8", errors="replace")
    handle.seek(0, 2)
    return handle


def _inode(handle: TextIO) -> int:
    import os

    return os.fstat(handle.fileno()).st_ino


def _load(line: str) -> dict[str, Any] | None:
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None
