"""What a Kafka user looks at first, read from the broker: this deployment's topics with their
partitions and end offsets, and each of its consumer groups' lag per partition.

Groups are this deployment's when their id starts with ``<prefix>-`` (every processor's group is
``<prefix>-<name>``, ``aios up``'s is ``<prefix>-embedded``); a group appears once it has committed
an offset on one of the prefix's topics. Lag is the high watermark minus the committed offset, as in
``streams/lag.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from aios.streams.errors import KafkaError
from aios.streams.lag import PartitionLag
from aios.streams.settings import Settings


@dataclass(frozen=True)
class TopicOffsets:
    topic: str
    ends: tuple[int, ...]  # the high watermark of each partition, by partition number
    starts: tuple[int, ...]  # the low watermark (what retention kept)

    @property
    def messages(self) -> int:
        return sum(e - s for e, s in zip(self.ends, self.starts, strict=True))


@dataclass(frozen=True)
class KafkaSample:
    """One reading of the broker, at ``at_ms``."""

    at_ms: int
    topics: tuple[TopicOffsets, ...]
    lags: tuple[PartitionLag, ...]


class KafkaOverview:
    """Reads :class:`KafkaSample` s for the topics of ``settings.kafka.topic_prefix``."""

    def __init__(self, settings: Settings, timeout_s: float = 5.0) -> None:
        self.prefix = settings.kafka.topic_prefix
        self.bootstrap = settings.kafka.bootstrap
        self.timeout_s = timeout_s
        self.admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap,
                                  "socket.timeout.ms": int(timeout_s * 1000), **settings.kafka.security()})

    def sample(self) -> KafkaSample:
        """Ask the broker now. Raises :class:`KafkaError` when it does not answer."""
        try:
            meta = self.admin.list_topics(timeout=self.timeout_s)
            partitions = {name: sorted(t.partitions) for name, t in meta.topics.items()
                          if name.startswith(f"{self.prefix}.") and t.error is None}
            every = [(t, p) for t, ps in partitions.items() for p in ps]
            highs = self._offsets(every, OffsetSpec.latest())  # type: ignore[no-untyped-call]
            lows = self._offsets(every, OffsetSpec.earliest())  # type: ignore[no-untyped-call]
            lags = self._lags(partitions, highs, lows)
        except KafkaException as exc:
            raise KafkaError(f"Kafka at {self.bootstrap} did not answer: {exc}") from exc
        # A topic one of whose partitions did not answer sits this sample out, rather than show a wrong total.
        topics = tuple(TopicOffsets(t, tuple(highs[(t, p)] for p in ps), tuple(lows[(t, p)] for p in ps))
                       for t, ps in sorted(partitions.items())
                       if all((t, p) in highs and (t, p) in lows for p in ps))
        return KafkaSample(int(time.time() * 1000), topics, tuple(lags))

    def groups(self) -> list[str]:
        """This deployment's consumer groups the broker knows."""
        answer = self.admin.list_consumer_groups(request_timeout=self.timeout_s).result(timeout=self.timeout_s)
        return sorted(g.group_id for g in answer.valid if g.group_id.startswith(f"{self.prefix}-"))

    def _lags(self, partitions: dict[str, list[int]], highs: dict[tuple[str, int], int],
              lows: dict[tuple[str, int], int]) -> list[PartitionLag]:
        out: list[PartitionLag] = []
        for group in self.groups():
            request = [ConsumerGroupTopicPartitions(group)]
            try:
                answer = self.admin.list_consumer_group_offsets(request, request_timeout=self.timeout_s)
                committed = answer[group].result(timeout=self.timeout_s)
            except KafkaException:
                continue  # the group went away (or is being rebalanced) since it was listed: next sample
            for tp in committed.topic_partitions or []:
                key = (tp.topic, tp.partition)
                if tp.topic not in partitions or key not in highs or key not in lows or tp.offset < 0:
                    continue
                # Retention may have passed the committed offset: what is left to read starts at low.
                start = max(tp.offset, lows[key])
                out.append(PartitionLag(group, tp.topic, tp.partition, tp.offset, highs[key],
                                        max(highs[key] - start, 0)))
        return sorted(out, key=lambda x: (x.group, x.topic, x.partition))

    def _offsets(self, partitions: Iterable[tuple[str, int]], spec: OffsetSpec) -> dict[tuple[str, int], int]:
        """Each partition's offset; a partition that does not answer (its leader is moving) is left out."""
        request = {TopicPartition(t, p): spec for t, p in partitions}
        if not request:
            return {}
        futures = self.admin.list_offsets(request, request_timeout=self.timeout_s)
        out: dict[tuple[str, int], int] = {}
        for tp, future in futures.items():
            try:
                out[(tp.topic, tp.partition)] = future.result(timeout=self.timeout_s).offset
            except KafkaException:
                continue  # shown again in the next sample, once the partition has a leader
        return out
