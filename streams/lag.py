"""Consumer lag per group, topic and partition, as Prometheus gauges read at scrape time.

Lag is the partition's high watermark minus the group's committed offset, asked of the broker
(not of the consumer), so it counts what is consumed but not yet committed, which is what a
crash would redeliver. Answers are cached for ``refresh_s`` so frequent scrapes cost the broker
one round of admin requests at most that often.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec
from prometheus_client.core import CollectorRegistry, GaugeMetricFamily
from prometheus_client.registry import Collector

from aios.streams.errors import KafkaError
from aios.streams.logs import LIBRDKAFKA
from aios.streams.metrics import LAG_ERRORS

log = logging.getLogger("aios.streams")

LAG_METRIC = "aios_consumer_lag_messages"
COMMITTED_METRIC = "aios_consumer_committed_offset"

Groups = Callable[[], Mapping[str, Sequence[str]]]


@dataclass(frozen=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    committed: int  # -1: the group has committed nothing on this partition yet
    high: int
    lag: int


class ConsumerLag(Collector):
    """Reports ``aios_consumer_lag_messages`` for the groups ``groups()`` names (group -> topics)."""

    def __init__(self, bootstrap: str, groups: Groups, *, refresh_s: float = 5.0, timeout_s: float = 5.0,
                 security: Mapping[str, str] | None = None) -> None:
        self.bootstrap = bootstrap
        config: dict[str, Any] = {"bootstrap.servers": bootstrap, "socket.timeout.ms": int(timeout_s * 1000),
                                  "logger": LIBRDKAFKA,
                                  **(security or {})}  # the process's TLS/SASL settings (KafkaSettings.security)
        self.admin = AdminClient(config)
        self.groups = groups
        self.refresh_s = refresh_s
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._at = 0.0
        self._last: list[PartitionLag] = []

    def read(self) -> list[PartitionLag]:
        """Ask the broker now: committed offsets of every group, high watermarks of their topics."""
        wanted = {g: list(t) for g, t in self.groups().items() if t}
        if not wanted:
            return []
        try:
            meta = self.admin.list_topics(timeout=self.timeout_s)
            partitions = {g: [TopicPartition(t, p) for t in topics if t in meta.topics
                              for p in sorted(meta.topics[t].partitions)] for g, topics in wanted.items()}
            every = {(tp.topic, tp.partition) for tps in partitions.values() for tp in tps}
            highs = self._offsets(every, OffsetSpec.latest())  # type: ignore[no-untyped-call]
            lows = self._offsets(every, OffsetSpec.earliest())  # type: ignore[no-untyped-call]
            out = []
            for group, tps in partitions.items():
                if not tps:
                    continue
                request = [ConsumerGroupTopicPartitions(group, tps)]
                answer = self.admin.list_consumer_group_offsets(request, request_timeout=self.timeout_s)
                committed = answer[group].result(timeout=self.timeout_s)
                for tp in committed.topic_partitions:
                    key = (tp.topic, tp.partition)
                    high = highs[key]
                    # Nothing committed yet: the group starts from the earliest offset.
                    start = tp.offset if tp.offset >= 0 else lows[key]
                    out.append(PartitionLag(group, tp.topic, tp.partition, max(tp.offset, -1), high,
                                            max(high - start, 0)))
        except KafkaException as exc:
            raise KafkaError(f"consumer lag: Kafka at {self.bootstrap} did not answer: {exc}") from exc
        return sorted(out, key=lambda x: (x.group, x.topic, x.partition))

    def _offsets(self, partitions: Iterable[tuple[str, int]], spec: OffsetSpec) -> dict[tuple[str, int], int]:
        request = {TopicPartition(t, p): spec for t, p in partitions}
        if not request:
            return {}
        futures = self.admin.list_offsets(request, request_timeout=self.timeout_s)
        return {(tp.topic, tp.partition): f.result(timeout=self.timeout_s).offset for tp, f in futures.items()}

    def collect(self) -> Iterable[GaugeMetricFamily]:
        with self._lock:
            if time.monotonic() - self._at >= self.refresh_s:
                try:
                    self._last = self.read()
                except KafkaError as exc:
                    # A scrape must not fail because the broker is slow: report nothing (the
                    # alert on absent lag fires) and count the miss.
                    LAG_ERRORS.inc()
                    log.warning("%s", exc)
                    self._last = []
                self._at = time.monotonic()
            rows = self._last
        lag = GaugeMetricFamily(LAG_METRIC,
                                "Records a consumer group has yet to commit, per topic and partition.",
                                labels=["group", "topic", "partition"])
        committed = GaugeMetricFamily(COMMITTED_METRIC,
                                      "The group's committed offset (-1: none yet).",
                                      labels=["group", "topic", "partition"])
        for r in rows:
            labels = [r.group, r.topic, str(r.partition)]
            lag.add_metric(labels, r.lag)
            committed.add_metric(labels, r.committed)
        yield lag
        yield committed

    def describe(self) -> Iterable[GaugeMetricFamily]:
        # Registering must not call the broker: describe() answers with no samples.
        return []


def watch(registry: CollectorRegistry, collector: ConsumerLag) -> Callable[[], None]:
    """Register ``collector``; return the function that unregisters it."""
    registry.register(collector)
    return lambda: registry.unregister(collector)
