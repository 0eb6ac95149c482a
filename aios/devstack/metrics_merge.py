"""``aios up``'s one /metrics: its own metrics and every supervised process's, each sample labelled
with the ``process`` it came from.

Each child serves /metrics on a loopback port the supervisor picked; a scrape of the supervisor
reads them all (in parallel, with a short timeout) and merges the families by name, so Prometheus
keeps scraping one address, as when everything ran in one process. A child that does not answer
(restarting) is left out of that scrape and counted in ``aios_metrics_scrape_failures_total``.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prometheus_client import REGISTRY, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.samples import Sample

from aios.streams.metrics import METRICS_SCRAPE_FAILURES

Targets = Callable[[], Mapping[str, int]]  # process name -> its loopback metrics port


def fetch(port: int, timeout_s: float = 2.0) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s) as reply:  # noqa: S310 - loopback
        return str(reply.read().decode())


def merge(sources: Iterable[tuple[str, Iterable[Metric]]]) -> list[Metric]:
    """Families by name, each sample labelled ``process`` (unless it already names one)."""
    merged: dict[str, Metric] = {}
    for process, families in sources:
        for family in families:
            target = merged.get(family.name)
            if target is None:
                target = merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
            elif target.type != family.type:
                continue  # two processes disagree on a family's type: keep the first one's
            for s in family.samples:
                target.samples.append(Sample(s.name, {"process": process, **s.labels}, s.value, s.timestamp,
                                             s.exemplar))
    return list(merged.values())


class Merged(Collector):
    """The supervisor's own registry and its children's /metrics, merged at each collect()."""

    def __init__(self, targets: Targets, own: CollectorRegistry = REGISTRY) -> None:
        self.targets = targets
        self.own = own
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="aios-metrics-scrape")

    def _child(self, item: tuple[str, int]) -> tuple[str, list[Metric]]:
        name, port = item
        try:
            return name, list(text_string_to_metric_families(fetch(port)))
        except (urllib.error.URLError, OSError, ValueError):
            METRICS_SCRAPE_FAILURES.labels(name).inc()
            return name, []

    def collect(self) -> Iterable[Metric]:
        children = list(self.pool.map(self._child, sorted(self.targets().items())))
        return merge([("supervisor", self.own.collect()), *children])

    def close(self) -> None:
        self.pool.shutdown(wait=True)


class MergedMetricsServer:
    """/metrics on ``host:port`` serving :class:`Merged`; :meth:`close` stops and joins its thread."""

    def __init__(self, host: str, port: int, targets: Targets) -> None:
        self.collector = Merged(targets)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self.collector)
        self._server: Any
        self._thread: threading.Thread
        self._server, self._thread = start_http_server(port, addr=host, registry=registry)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self.collector.close()
