"""confluent-kafka clients with AIOS defaults: idempotent acks=all producers, Avro in and out."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import suppress
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka import KafkaError as CKafkaError

from aios.schemas.codec import Codec, ConfluentRegistry, Decoded
from aios.schemas.errors import SchemaError
from aios.schemas.limits import PRODUCER_HEADROOM_BYTES
from aios.streams.errors import KafkaError
from aios.streams.kafka_access import KafkaAccessError, authorization_problem, check_access
from aios.streams.logs import LIBRDKAFKA
from aios.streams.settings import Settings
from aios.streams.topics import Topics
from aios.streams.tracing import Headers, headers_for


def make_codec(settings: Settings, *, validate: bool = True) -> Codec:
    """The codec every process uses: registry framing when a registry is configured."""
    registry = ConfluentRegistry(settings.kafka.schema_registry_url) if settings.kafka.schema_registry_url else None
    # The orchestrator's outbox carries its TaskResults and ProjectStatuses in one ordered stream.
    return Codec(registry=registry, validate=validate, mixed_topics=frozenset({Topics.from_settings(settings).finals}),
                 max_message_bytes=settings.kafka.max_message_bytes)


def producer_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    # A submitted task is never lost: idempotence implies acks=all and ordered retries.
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka.bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 1,
        # The Java client's (and aiokafka's, so faust's) key hashing: an event keyed by project_id
        # lands on the same partition whoever produced it, which the orchestrator's table needs.
        "partitioner": "murmur2_random",
        "logger": LIBRDKAFKA,  # librdkafka's lines go to the log, not to stderr (streams.logs)
        # Above what the codec lets through, so an oversized event is refused there, as the record's
        # fault, and never by librdkafka, whose refusal is fatal inside a transaction.
        "message.max.bytes": settings.kafka.max_message_bytes + PRODUCER_HEADROOM_BYTES,
        **settings.kafka.security(),
    }
    config.update(extra)
    return config


class EventProducer:
    """Produces AIOS events; ``flush()`` raises if any delivery failed."""

    def __init__(self, settings: Settings, codec: Codec | None = None, **extra: Any) -> None:
        self.settings = settings
        self.codec = codec or make_codec(settings)
        self._producer = Producer(producer_config(settings, **extra))
        self._errors: list[str] = []
        self._refused: KafkaAccessError | None = None  # the first delivery an ACL refused
        self.delivered: list[tuple[str, int, int]] = []  # (topic, partition, offset)

    def _on_delivery(self, err: Any, msg: Message) -> None:
        if err is not None:
            self._errors.append(f"{msg.topic()}: {err}")
            if self._refused is None and isinstance(err, CKafkaError):
                self._refused = authorization_problem(self.settings.kafka, err, str(msg.topic()), "write to")
        else:
            self.delivered.append((str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0)))

    def send(self, topic: str, record: str, value: Mapping[str, Any], key: str | None = None) -> None:
        """Queue an event, with its traceparent (the current span's, in the event's trace)."""
        self.send_raw(topic, self.codec.encode(record, value, topic), key, headers_for(value))

    def send_tombstone(self, topic: str, key: str) -> None:
        """A null value for ``key`` on a compacted topic: compaction then forgets the key."""
        self.send_raw(topic, None, key)

    def send_raw(self, topic: str, data: bytes | None, key: str | None = None, headers: Headers | None = None) -> None:
        while True:
            try:
                self._producer.produce(topic, value=data, key=key, headers=headers, on_delivery=self._on_delivery)
                break
            except BufferError:
                # Local queue full: serve delivery callbacks to make room, then try again.
                self._producer.poll(0.05)
        self._producer.poll(0)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait for delivery; ``timeout_s=0`` just sends what is queued without waiting."""
        remaining = self._producer.flush(timeout_s)
        if remaining and timeout_s > 0:
            raise KafkaError(f"{remaining} events were not acknowledged within {timeout_s:.0f}s")
        if self._errors:
            errors, self._errors = self._errors, []
            refused, self._refused = self._refused, None
            if refused is not None:
                raise refused
            raise KafkaError("delivery failed: " + "; ".join(errors[:5]))


def make_consumer(settings: Settings, group: str, **extra: Any) -> Consumer:
    return Consumer(consumer_config(settings, group, **extra))


def consumer_config(settings: Settings, group: str, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka.bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "fetch.wait.max.ms": settings.kafka.fetch_wait_ms,
        "session.timeout.ms": int(settings.kafka.session_timeout_s * 1000),
        "heartbeat.interval.ms": int(settings.kafka.session_timeout_s * 250),
        "logger": LIBRDKAFKA,
        **settings.kafka.security(),
    }
    if extra.get("enable.partition.eof"):
        # A reader that waits for the end-of-partition event to know it has caught up (a state
        # read back, the agent registry, the live view): that event needs an empty fetch answer per
        # partition, which a long wait holds back. The registry under 0.3 s heartbeats never saw
        # it for every partition with 500 ms; these readers keep the short wait they always had.
        config["fetch.wait.max.ms"] = END_READER_FETCH_WAIT_MS
    config.update(extra)
    return config


END_READER_FETCH_WAIT_MS = 10


def poll_batch(consumer: Consumer, most: int, wait_s: float) -> list[Message]:
    """Up to ``most`` records (or events): the first waited for up to ``wait_s``, then whatever else is
    already fetched. (consume(n, t) waits all of t for n records, adding latency to every batch.)"""
    first = consumer.poll(wait_s)
    return [] if first is None else [first, *consumer.consume(most - 1, 0)]


def read_partition(settings: Settings, topic: str, partition: int, *, timeout_s: float = 60.0) -> list[Message]:
    """Every committed record of one partition, from its start to its end at the time of reading.

    The end is told by a partition-EOF event, not by a watermark query: the fetcher rides out
    leader elections (right after topic creation), where watermark queries fail, and EOF is
    reached at the last stable offset, after any transaction marker.
    """
    # A processor reads its state back with this when it is given partitions, before it is ready, so
    # the end must show at once; an empty partition took 1–1.5 s, and three held a start 4.5 s:
    # - the partition's leader is asked for first: assigned before librdkafka knows it, the start
    #   offset is queried on a 500 ms retry timer;
    # - the wait for an empty fetch (which tells the end) is short (END_READER_FETCH_WAIT_MS);
    # - each round takes what is there (consume(n, t) waits all of t for n records).
    reader = make_consumer(settings, group=f"{settings.kafka.topic_prefix}-reader",
                           **{"enable.partition.eof": True})
    out: list[Message] = []
    try:
        with suppress(KafkaException):  # no answer yet: the fetcher finds the leader itself, later
            reader.list_topics(topic, timeout=10)
        reader.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for msg in poll_batch(reader, 1000, 0.5):
                err = msg.error()
                if err is None:
                    out.append(msg)
                elif err.code() == CKafkaError._PARTITION_EOF:
                    return out
                elif err.fatal():
                    raise KafkaError(f"reading {topic}[{partition}] failed: {err}")
                # other errors are transient (a leader moving): the fetcher retries
        raise KafkaError(f"could not read {topic}[{partition}] to its end within {timeout_s:.0f}s")
    finally:
        reader.close()


# Answers a partition gives while its leader is still being elected (a topic created a moment ago,
# a broker busy with other topics): they pass within moments, though librdkafka does not flag them
# as retriable for a watermark query.
_LEADER_MOVING = frozenset({CKafkaError.NOT_LEADER_FOR_PARTITION, CKafkaError.LEADER_NOT_AVAILABLE,
                            CKafkaError.UNKNOWN_TOPIC_OR_PART})


def watermarks(consumer: Consumer, tp: TopicPartition, wait_s: float = 10.0) -> tuple[int, int]:
    """A partition's (low, high) offsets, asked again while its leader is moving, for up to ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            return int(low), int(high)
        except KafkaException as exc:
            code = exc.args[0].code() if exc.args and isinstance(exc.args[0], CKafkaError) else None
            if code not in _LEADER_MOVING or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


class TopicReader:
    """Reads one topic from the beginning or from its current end, decoding each event.

    It assigns partitions directly (no group rebalance), so a CLI can start reading at once.
    """

    def __init__(self, settings: Settings, topic: str, *, from_beginning: bool, codec: Codec | None = None) -> None:
        check_access(settings)
        self.settings = settings
        self.codec = codec or make_codec(settings)
        self.topic = topic
        self._consumer = make_consumer(settings, group=f"aios-reader-{time.time_ns()}")
        try:
            meta = self._consumer.list_topics(topic, timeout=10)
        except KafkaException as exc:
            self._consumer.close()
            raise KafkaError(f"Kafka at {settings.kafka.bootstrap} did not answer: {exc}") from exc
        tmeta = meta.topics.get(topic)
        if tmeta is not None and tmeta.error is not None:
            refused = authorization_problem(settings.kafka, tmeta.error, topic, "read")
            if refused is not None:
                self._consumer.close()
                raise refused
        if tmeta is None or tmeta.error is not None or not tmeta.partitions:
            self._consumer.close()
            raise KafkaError(f"topic {topic!r} does not exist; create the topics with `aios topics create`")
        partitions = []
        self._ends: dict[int, int] = {}  # partition -> high watermark when the reader was opened
        for p in tmeta.partitions:
            try:
                low, high = watermarks(self._consumer, TopicPartition(topic, p))
            except KafkaException as exc:
                self._consumer.close()
                raise KafkaError(f"cannot read the offsets of {topic}[{p}]: {exc}") from exc
            partitions.append(TopicPartition(topic, p, low if from_beginning else high))
            if high > (low if from_beginning else high):
                self._ends[p] = high
        self._consumer.assign(partitions)

    def poll(self, timeout_s: float) -> Message | None:
        msg = self._consumer.poll(timeout_s)
        if msg is None:
            return None
        err = msg.error()
        if err is not None:
            refused = authorization_problem(self.settings.kafka, err, self.topic, "read")
            if refused is not None:
                raise refused
            raise KafkaError(f"consume from {self.topic} failed: {err}")
        return msg

    def events(self, timeout_s: float) -> Iterator[tuple[Message, Decoded | SchemaError]]:
        """Yield (message, decoded event or the decode error) until ``timeout_s`` of silence."""
        while True:
            msg = self.poll(timeout_s)
            if msg is None:
                return
            try:
                yield msg, self.codec.decode(msg.value())
            except SchemaError as exc:
                yield msg, exc

    def events_to_end(self, timeout_s: float) -> Iterator[tuple[Message, Decoded | SchemaError]]:
        """Yield what the topic held when the reader was opened, then stop, however busy the topic
        is (events() waits for silence, which a topic with heartbeats never has)."""
        pending = dict(self._ends)
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            msg = self.poll(min(0.5, timeout_s))
            if msg is None:
                # The last offsets may be transaction markers, never delivered: trust the position.
                for tp in self._consumer.position([TopicPartition(self.topic, p) for p in list(pending)]):
                    if tp.offset >= pending[tp.partition]:
                        del pending[tp.partition]
                continue
            partition, offset = msg.partition(), msg.offset()
            if partition in pending and offset is not None and offset >= pending[partition] - 1:
                del pending[partition]
            try:
                yield msg, self.codec.decode(msg.value())
            except SchemaError as exc:
                yield msg, exc

    def close(self) -> None:
        self._consumer.close()


__all__ = ["OFFSET_END", "EventProducer", "TopicReader", "consumer_config", "make_codec", "make_consumer",
           "producer_config", "read_partition"]
