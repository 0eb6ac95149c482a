"""Reading and replaying dead letters: ``aios dlq list|replay`` and the API's ``/v1/dlq``.

A replay sends a letter's original key and bytes back to its source topic (or a chosen one), with
three headers: ``aios-replay-id`` (the replay's own event id), ``aios-replay-of`` (the dead letter's
event id) and ``aios-replay-count`` (how often these bytes were replayed, this time included). The
ledger in Redis (``connectors/context/replays.py``) counts replays per record content, and refuses
past ``AIOS_DLQ_REPLAY_LIMIT``: a record that fails every time cannot cycle through the DLQ forever.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError as CKafkaError
from confluent_kafka import KafkaException, Producer, TopicPartition

from aios.connectors.context.replays import ReplayLedger, ReplayRecord, fingerprint
from aios.schemas.errors import SchemaError
from aios.schemas.events import to_ms
from aios.streams.errors import KafkaError, OrchestrationError
from aios.streams.kafka import make_codec, make_consumer, producer_config, watermarks
from aios.streams.metrics import DLQ_REPLAYS
from aios.streams.settings import Settings
from aios.streams.topics import Topics

PREVIEW_BYTES = 64
CUT_MARK = "payload cut to its first"  # dead_letter_event says so when it kept only the start
HEADER_COUNT, HEADER_OF, HEADER_ID = "aios-replay-count", "aios-replay-of", "aios-replay-id"


class DlqReplayError(OrchestrationError):
    """A replay was asked for that cannot be done (an unknown target topic, the DLQ itself)."""


@dataclass(frozen=True)
class Letter:
    """One dead letter, where it sits on the DLQ, and its record's fingerprint."""

    event_id: str
    position: str  # topic:partition:offset on the DLQ
    timestamp_ms: int
    source_topic: str
    source_partition: int
    source_offset: int
    processor: str
    error_type: str
    error: str
    errors: tuple[str, ...]
    key: bytes | None
    payload: bytes
    fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fingerprint", fingerprint(self.key, self.payload))

    @property
    def cut(self) -> bool:
        return any(e.startswith(CUT_MARK) for e in self.errors)

    def doc(self, replays: int = 0) -> dict[str, Any]:
        text, form = preview(self.payload)
        return {"id": self.event_id, "position": self.position, "timestamp": self.timestamp_ms,
                "source_topic": self.source_topic, "source_partition": self.source_partition,
                "source_offset": self.source_offset, "processor": self.processor, "error_type": self.error_type,
                "reason": self.error, "errors": list(self.errors),
                "key": preview(self.key)[0] if self.key is not None else None, "size": len(self.payload),
                "preview": text, "preview_format": form, "replays": replays, "payload_cut": self.cut}


def preview(data: bytes, limit: int = PREVIEW_BYTES) -> tuple[str, str]:
    """The first ``limit`` bytes as text when they are printable UTF-8, else as hex: (text, form)."""
    head = data[:limit]
    for trim in range(4):  # the cut may split a multi-byte character: try without its first bytes
        try:
            text = head[:len(head) - trim].decode("utf-8")
        except UnicodeDecodeError:
            continue
        if all(c.isprintable() or c in "\t\n\r" for c in text):
            return text, "text"
        break
    return head.hex(" "), "hex"


@dataclass(frozen=True)
class LetterFilter:
    since_ms: int | None = None
    processor: str | None = None
    reason: str | None = None  # a case-insensitive part of the error type or message
    ids: frozenset[str] = frozenset()

    def keeps(self, letter: Letter) -> bool:
        if self.ids and letter.event_id not in self.ids:
            return False
        if self.since_ms is not None and letter.timestamp_ms < self.since_ms:
            return False
        if self.processor is not None and letter.processor != self.processor:
            return False
        if self.reason is not None:
            wanted = self.reason.casefold()
            return wanted in letter.error_type.casefold() or wanted in letter.error.casefold()
        return True


def read_letters(settings: Settings, where: LetterFilter, limit: int = 1000, timeout_s: float = 30.0) -> list[Letter]:
    """The dead letters ``where`` keeps, oldest first; the latest ``limit`` of them."""
    topic = Topics.from_settings(settings).dlq
    codec = make_codec(settings)
    consumer = make_consumer(settings, group=f"{settings.kafka.topic_prefix}-dlq-reader",
                             **{"enable.partition.eof": True})
    out: list[Letter] = []
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            raise KafkaError(f"the DLQ topic {topic!r} does not exist; create the topics with `aios topics create`")
        starts = [TopicPartition(topic, p, where.since_ms if where.since_ms is not None else 0)
                  for p in sorted(meta.partitions)]
        found = consumer.offsets_for_times(starts, timeout=10) if where.since_ms is not None else None
        pending: dict[int, int] = {}
        assignment = []
        for tp in starts:
            low, high = watermarks(consumer, TopicPartition(topic, tp.partition))
            begin = low if found is None else next(f.offset for f in found if f.partition == tp.partition)
            begin = high if begin < 0 else max(begin, low)
            if begin < high:
                pending[tp.partition] = high
                assignment.append(TopicPartition(topic, tp.partition, begin))
        consumer.assign(assignment)
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.5):
                partition = int(msg.partition() or 0)
                err = msg.error()
                if err is not None:
                    if err.code() == CKafkaError._PARTITION_EOF:
                        pending.pop(partition, None)
                    continue
                offset = int(msg.offset() or 0)
                if offset + 1 >= pending.get(partition, 0):
                    pending.pop(partition, None)
                letter = _letter(codec, topic, partition, offset, msg.value())
                if letter is not None and where.keeps(letter):
                    out.append(letter)
        if pending:
            raise KafkaError(f"could not read {topic} to its end within {timeout_s:.0f}s")
    except KafkaException as exc:
        raise KafkaError(f"reading the DLQ failed: {exc}") from exc
    finally:
        consumer.close()
    out.sort(key=lambda x: x.timestamp_ms)
    return out[-limit:] if limit > 0 else out


def _letter(codec: Any, topic: str, partition: int, offset: int, data: bytes | None) -> Letter | None:
    try:
        v = codec.decode(data or b"", expect="DeadLetter").value
    except SchemaError:
        return None  # not a dead letter (someone else's bytes on the DLQ): nothing to replay
    return Letter(v["event_id"], f"{topic}:{partition}:{offset}", to_ms(v["timestamp"]), v["source_topic"],
                  v["source_partition"], v["source_offset"], v["processor"], v["error_type"], v["error"],
                  tuple(v.get("errors") or ()), v["key"], v["payload"])


@dataclass(frozen=True)
class Outcome:
    """What became of one letter: ``replayed``, ``dry_run`` (would be), or ``refused`` with the reason."""

    letter: Letter
    outcome: str
    count: int  # the record's replays after this one (or before it, when refused)
    topic: str
    reason: str = ""
    partition: int | None = None
    offset: int | None = None
    replay_id: str | None = None

    def doc(self) -> dict[str, Any]:
        return {"id": self.letter.event_id, "outcome": self.outcome, "replays": self.count, "topic": self.topic,
                "reason": self.reason, "partition": self.partition, "offset": self.offset,
                "replay_id": self.replay_id, "source_topic": self.letter.source_topic,
                "processor": self.letter.processor}


class Replayer:
    """Sends letters back; one per process, :meth:`close` when done."""

    def __init__(self, settings: Settings, ledger: ReplayLedger, by: str) -> None:
        self.settings = settings
        self.ledger = ledger
        self.by = by
        self.limit = settings.observability.dlq_replay_limit
        self.dlq = Topics.from_settings(settings).dlq
        self._producer: Producer | None = None

    def _target(self, letter: Letter, to: str | None, known: set[str]) -> str:
        topic = to or letter.source_topic
        if topic == self.dlq:
            raise DlqReplayError(f"cannot replay into the DLQ itself ({topic}); name the topic the record belongs on")
        if topic not in known:
            raise DlqReplayError(f"topic {topic!r} does not exist on {self.settings.kafka.bootstrap}; "
                                 "replay with --to an existing topic")
        return topic

    async def replay(self, letters: Iterable[Letter], to: str | None = None, dry_run: bool = False,
                     advance: Callable[[], None] | None = None) -> list[Outcome]:
        """Each letter's outcome, in order; ``advance`` is called after each (a progress bar)."""
        letters = list(letters)
        known = await asyncio.to_thread(self._topics)
        targets = {letter.event_id: self._target(letter, to, known) for letter in letters}  # refuse all up front
        counts = await self.ledger.counts([letter.fingerprint for letter in letters])
        out = []
        for letter in letters:
            topic = targets[letter.event_id]
            outcome = await self._one(letter, topic, counts[letter.fingerprint], dry_run)
            DLQ_REPLAYS.labels(outcome.outcome).inc()
            out.append(outcome)
            if advance is not None:
                advance()
        return out

    async def _one(self, letter: Letter, topic: str, count: int, dry_run: bool) -> Outcome:
        if letter.cut:
            return Outcome(letter, "refused", count, topic,
                           "its payload was cut when it was dead-lettered; the original bytes are not whole")
        if dry_run:
            if count >= self.limit:
                return Outcome(letter, "refused", count, topic, self._over(count))
            return Outcome(letter, "dry_run", count + 1, topic)
        claimed = await self.ledger.claim(letter.fingerprint, self.limit)
        if claimed < 0:
            return Outcome(letter, "refused", -claimed, topic, self._over(-claimed))
        replay_id = str(uuid.uuid4())
        headers: list[tuple[str, str | bytes | None]] = [
            (HEADER_ID, replay_id.encode()), (HEADER_OF, letter.event_id.encode()), (HEADER_COUNT, str(claimed).encode())]
        try:
            partition, offset = await asyncio.to_thread(self._send, topic, letter, headers)
        except KafkaError:
            await self.ledger.release(letter.fingerprint)
            raise
        await self.ledger.record(ReplayRecord(replay_id, letter.event_id, letter.fingerprint, claimed, topic,
                                              partition, offset, int(time.time() * 1000), self.by))
        return Outcome(letter, "replayed", claimed, topic, partition=partition, offset=offset, replay_id=replay_id)

    def _over(self, count: int) -> str:
        return (f"this record was replayed {count} times already (AIOS_DLQ_REPLAY_LIMIT={self.limit}); it keeps "
                "failing: fix the cause, then raise the limit to replay it again")

    def _topics(self) -> set[str]:
        try:
            return set(self._producer_().list_topics(timeout=10).topics)
        except KafkaException as exc:
            raise KafkaError(f"Kafka at {self.settings.kafka.bootstrap} did not answer: {exc}") from exc

    def _producer_(self) -> Producer:
        if self._producer is None:
            self._producer = Producer(producer_config(self.settings))
        return self._producer

    def _send(self, topic: str, letter: Letter, headers: list[tuple[str, str | bytes | None]]) -> tuple[int, int]:
        delivered: list[Any] = []
        producer = self._producer_()
        producer.produce(topic, value=letter.payload, key=letter.key, headers=headers,
                         on_delivery=lambda err, msg: delivered.append((err, msg)))
        producer.flush(30)
        if not delivered:
            raise KafkaError(f"the replay of {letter.event_id} to {topic} was not acknowledged within 30s")
        err, msg = delivered[0]
        if err is not None:
            raise KafkaError(f"the replay of {letter.event_id} to {topic} failed: {err}")
        return int(msg.partition()), int(msg.offset())

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(10)
