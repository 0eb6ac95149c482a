"""Structured logs: one line per event, with time, level, process, processor, and the task, project
and trace ids in scope, as text for people or JSON for machines (``AIOS_LOG_FORMAT``).

The edge (the CLI) calls :func:`configure` once per process. Processors name themselves with
:func:`processor_scope` and put the ids of the record at hand in scope with :func:`ids_scope`;
both are context variables, so concurrent asyncio tasks and the threads they start
(``asyncio.to_thread`` copies the context) each log their own.

Libraries' warnings (faust, aiokafka, librdkafka through its ``logger`` property) are retries
they make themselves: "coordinator load in progress", a rebalance, a heartbeat during one. They
go to the log one level lower (INFO), so the terminal shows what needs a person.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TextIO

from aios.streams.settings import ObservabilitySettings

IDS = ("task_id", "project_id", "trace_id")
LIBRARIES = ("faust", "mode", "aiokafka", "librdkafka", "uvicorn", "httpx", "urllib3")
LIBRDKAFKA = logging.getLogger("librdkafka")
"""The ``logger`` every confluent-kafka client is given (streams.kafka), instead of its stderr."""

_processor: ContextVar[str | None] = ContextVar("aios_processor", default=None)
_ids: ContextVar[Mapping[str, str] | None] = ContextVar("aios_log_ids", default=None)
_process = {"name": "aios"}


def process_name() -> str:
    return _process["name"]


@contextmanager
def processor_scope(name: str) -> Iterator[None]:
    """Log records made in this block (and in tasks and threads it starts) name ``name`` as processor."""
    token = _processor.set(name)
    try:
        yield
    finally:
        _processor.reset(token)


def set_processor(name: str) -> None:
    """Name the processor for the rest of the current task or thread (a service's own loop)."""
    _processor.set(name)


@contextmanager
def ids_scope(**ids: str | None) -> Iterator[None]:
    """Put task, project and trace ids in scope for the records logged in this block."""
    token = _ids.set({**(_ids.get() or {}), **{k: v for k, v in ids.items() if v}})
    try:
        yield
    finally:
        _ids.reset(token)


def _is_library(name: str) -> bool:
    return name.split(".", 1)[0] in LIBRARIES


class Context(logging.Filter):
    """Adds process, processor and ids; demotes library warnings; applies the level afterwards
    (so a demoted record is judged at its new level)."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if _is_library(record.name) and record.levelno == logging.WARNING:
            record.levelno, record.levelname = logging.INFO, "INFO"
        if record.levelno < self.level:
            return False
        record.aios_process = _process["name"]
        record.aios_processor = _processor.get() or _process["name"]
        record.aios_ids = dict(_ids.get() or {})
        return True


def _utc(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


def as_document(record: logging.LogRecord) -> dict[str, Any]:
    """The JSON form of a record: what the supervisor's log file holds, one per line."""
    doc: dict[str, Any] = {
        "time": _utc(record.created), "level": record.levelname,
        "process": getattr(record, "aios_process", _process["name"]), "pid": record.process,
        "processor": getattr(record, "aios_processor", None), "logger": record.name,
        "message": record.getMessage(),
    }
    doc.update(getattr(record, "aios_ids", {}))
    if record.exc_info and record.exc_info[0] is not None:
        doc["error"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
        doc["exception"] = logging.Formatter().formatException(record.exc_info)
    return doc


def render_text(doc: Mapping[str, Any]) -> str:
    """One line for people: time level process[pid] processor: message ids (exception type)."""
    where = str(doc.get("process", "?"))
    if doc.get("pid"):
        where += f"[{doc['pid']}]"
    processor = doc.get("processor")
    if processor and processor != doc.get("process"):
        where += f" {processor}"
    ids = " ".join(f"{k.removesuffix('_id')}={doc[k]}" for k in IDS if doc.get(k))
    line = f"{doc.get('time', '')} {str(doc.get('level', 'INFO')):<7} {where}: {doc.get('message', '')}"
    if ids:
        line += f" ({ids})"
    if doc.get("error"):
        line += f" [{doc['error']}]"
    return line.replace("\n", "\\n")


class _Formatter(logging.Formatter):
    def __init__(self, fmt: str) -> None:
        super().__init__()
        self.json = fmt == "json"

    def format(self, record: logging.LogRecord) -> str:
        doc = as_document(record)
        if self.json:
            return json.dumps(doc, ensure_ascii=False, default=str)
        return render_text(doc)


def level_number(name: str) -> int:
    return int(logging.getLevelName(name.upper()))


def configure(settings: ObservabilitySettings, process: str, *, stream: TextIO | None = None) -> None:
    """Send every log record of this process to stderr, one line each, in AIOS_LOG_FORMAT at
    AIOS_LOG_LEVEL. Replaces what an earlier call installed."""
    _process["name"] = process
    level = level_number(settings.log_level)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_Formatter(settings.log_format))
    handler.addFilter(Context(level))
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "aios", False)]:
        root.removeHandler(old)
    handler.aios = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    # Library warnings reach the filter (which demotes them); their INFO chatter only at DEBUG.
    root.setLevel(min(level, logging.WARNING))
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(logging.DEBUG if level <= logging.DEBUG else logging.WARNING)
    logging.getLogger("aios").setLevel(level)
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: Any) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    logging.getLogger("aios").critical("uncaught %s: %s", kind.__name__, exc, exc_info=(kind, exc, tb))
