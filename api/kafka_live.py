"""The dashboard's Kafka view: topics, end offsets, message rates and consumer lag, sampled by a thread
of the API process every ``AIOS_API_KAFKA_SAMPLE_S`` and kept for ``AIOS_API_KAFKA_HISTORY_S``.

The hour of lag lives in this process's memory, not in the history store: the store keeps events,
not broker offsets, and an hour of samples of a few hundred partitions is small. A restarted API
starts with an empty chart (Prometheus keeps ``aios_consumer_lag_messages`` for longer).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from aios.api.metrics import KAFKA_SAMPLE_ERRORS, KAFKA_SAMPLES
from aios.streams.errors import KafkaError
from aios.streams.readmodels.kafka_overview import KafkaOverview, KafkaSample
from aios.streams.settings import Settings

log = logging.getLogger(__name__)


class KafkaMonitor:
    """:meth:`start` the sampling thread; read :meth:`snapshot` and :meth:`lag_history`."""

    def __init__(self, settings: Settings, overview: Callable[[], KafkaOverview] | None = None) -> None:
        self.interval_s = settings.api.kafka_sample_s
        self.window_s = settings.api.kafka_history_s
        self._overview_factory = overview or (lambda: KafkaOverview(settings))
        self._samples: deque[KafkaSample] = deque(maxlen=max(2, int(self.window_s / self.interval_s) + 1))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self.seq = 0  # samples taken so far: a WebSocket sends each new one once
        self.error: str | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self._thread = threading.Thread(target=self._run, name="aios-api-kafka", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)

    def _run(self) -> None:
        overview = self._overview_factory()
        while not self._stop.is_set():
            try:
                sample = overview.sample()
            except Exception as exc:  # the sampler must outlive any answer; the view shows why it failed
                # It keeps the samples it has; the next one may work.
                KAFKA_SAMPLE_ERRORS.inc()
                self.error = str(exc) if isinstance(exc, KafkaError) else f"{type(exc).__name__}: {exc}"
                log.warning("kafka view: %s", self.error)
            else:
                KAFKA_SAMPLES.inc()
                with self._lock:
                    self._samples.append(sample)
                    self.seq += 1
                self.error = None
                if self._loop is not None and not self._loop.is_closed():
                    self._loop.call_soon_threadsafe(self._notify)
            self._stop.wait(self.interval_s)

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = asyncio.Event()

    async def next_sample(self, after: int, timeout_s: float) -> int:
        """Wait until a sample newer than ``after`` is taken (or ``timeout_s``); the current seq."""
        if self.seq > after or self._changed is None:
            return self.seq
        try:
            await asyncio.wait_for(self._changed.wait(), timeout_s)
        except TimeoutError:
            pass
        return self.seq

    # -- reads ---------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The latest sample as a document: topics (with rates since the sample before) and lag."""
        with self._lock:
            last = self._samples[-1] if self._samples else None
            before = self._samples[-2] if len(self._samples) > 1 else None
            seq = self.seq
        doc: dict[str, Any] = {"seq": seq, "at": None, "sample_s": self.interval_s, "error": self.error,
                               "topics": [], "groups": []}
        if last is None:
            return doc
        doc["at"] = last.at_ms
        earlier = {t.topic: sum(t.ends) for t in before.topics} if before is not None else {}
        dt = (last.at_ms - before.at_ms) / 1000 if before is not None else 0.0
        for t in last.topics:
            rate = (sum(t.ends) - earlier[t.topic]) / dt if dt > 0 and t.topic in earlier else None
            doc["topics"].append({"topic": t.topic, "partitions": len(t.ends), "end_offsets": list(t.ends),
                                  "messages": t.messages, "rate_per_s": None if rate is None else round(rate, 3)})
        groups: dict[str, dict[str, Any]] = {}
        for lag in last.lags:
            g = groups.setdefault(lag.group, {"group": lag.group, "lag": 0, "partitions": []})
            g["lag"] += lag.lag
            g["partitions"].append({"topic": lag.topic, "partition": lag.partition, "committed": lag.committed,
                                    "end": lag.high, "lag": lag.lag})
        doc["groups"] = list(groups.values())
        return doc

    def lag_history(self, since_s: float | None = None, group: str | None = None) -> dict[str, Any]:
        """Lag over time: each group's total, or with ``group`` each of its partitions."""
        with self._lock:
            samples = list(self._samples)
        if since_s is not None and samples:
            cutoff = samples[-1].at_ms - since_s * 1000
            samples = [s for s in samples if s.at_ms >= cutoff]
        names: dict[str, dict[str, Any]] = {}
        rows: list[dict[str, int]] = []
        for sample in samples:
            row: dict[str, int] = {}
            for lag in sample.lags:
                if group is None:
                    name = lag.group
                    names.setdefault(name, {"group": lag.group})
                elif lag.group == group:
                    name = f"{lag.topic}[{lag.partition}]"
                    names.setdefault(name, {"group": group, "topic": lag.topic, "partition": lag.partition})
                else:
                    continue
                row[name] = row.get(name, 0) + lag.lag
            rows.append(row)
        # A series missing from a sample (the group had not committed yet, or was gone) is null there.
        series = [{**labels, "lag": [row.get(name) for row in rows]} for name, labels in sorted(names.items())]
        return {"sample_s": self.interval_s, "window_s": self.window_s, "at": [s.at_ms for s in samples],
                "series": series}
