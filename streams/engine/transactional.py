"""Runtime model 3 of 3, the transactional processor: use it where state and outputs must change
together exactly once (the orchestrator, the results committer).

Exactly-once processors: consume a batch, produce its outputs and commit its offsets in one Kafka
transaction (consume-transform-produce on confluent-kafka).

A batch's outputs, state-log entries included, become visible to read_committed readers together
with the offsets that consumed it, or not at all. The offsets go either to the consumer group
inside the transaction (``send_offsets_to_transaction``), or, for a processor with a state log of
its own, into that log (``record_positions``): two fewer coordinator round trips per batch, which
were most of the orchestrator's time per batch. A process killed mid-batch leaves an open
transaction that its restarted successor (same transactional id) aborts at once, and the batch is
read again from the committed offsets.

Batches alternate between two transactional producers. After a commit the coordinator still
writes the commit markers for a few ms; a transaction of the same producer that adds a partition
meanwhile is refused (CONCURRENT_TRANSACTIONS) and librdkafka retries it after a fixed 20 ms,
which was the orchestrator's overhead p99 and, on a slower broker, its median. The other
producer has no commit in flight. A batch still starts only after the previous one's commit
returned, so outputs keep their order.

A record that makes ``process`` raise is handled as ``failures.decide`` says. Its fault: the
transaction is aborted (nothing half-applied reaches the state or the outputs), the state rebuilt,
and when the batch is read again that record is dead-lettered instead of processed. A server's
fault (a schema registry that does not answer): aborted, rebuilt, and the batch read again after a
backoff. Processors iterate their batch with ``self.records(batch)`` so the failing record is known.
When the failure comes after the records (outputs a processor writes once per batch, such as the
orchestrator's state entries), the batch is read again *isolating*: the processor then writes
each record's outputs as soon as it is processed, so the one at fault is known.
"""

from __future__ import annotations

import asyncio
import threading
import time
from abc import abstractmethod
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import faust
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, Producer, TopicPartition
from confluent_kafka import KafkaError as CKafkaError

from aios.schemas.errors import RecordTooLargeError
from aios.schemas.limits import message_size
from aios.streams.engine.bounded import BoundedCaller, CallStuck
from aios.streams.engine.failures import Backoff, Verdict, verdict_for
from aios.streams.engine.records import dead_letter_event, log
from aios.streams.engine.runtime import Runtime
from aios.streams.errors import KafkaError
from aios.streams.kafka import make_consumer, poll_batch, producer_config
from aios.streams.logs import set_processor
from aios.streams.metrics import PROCESSING, TXN_RETRIES
from aios.streams.tracing import Headers, headers_for

T = TypeVar("T")

# A first record is waited for up to POLL_S; whatever else is already fetched joins its batch
# (streams.kafka.poll_batch).
POLL_S = 0.05
# How long a transaction call whose error librdkafka marks retriable (a coordinator that timed out,
# as while a broker is lost and its partitions' leadership moves) is tried again before the
# processor gives up on it. A broker's loss settles in seconds to tens of seconds.
TXN_RETRY_S = 120.0
# How long one transaction call (send offsets, commit, abort) waits; librdkafka's default is forever.
# An abort with no bound once never returned after the active controller was lost, and the results
# committer stalled for good with no word in its log (CI run 19). A call that times out is
# retriable: it is asked again, within TXN_RETRY_S (ABORT_RETRY_S for an abort).
TXN_CALL_S = 30.0
# A transaction call that has not returned this long after its own timeout is stuck (a librdkafka
# bug; see bounded.py): its producer is replaced as a stuck abort's is.
STUCK_AFTER_S = TXN_CALL_S + 15.0
# An abort that has not completed in this long is given up: the producer is replaced, and the new
# one's init_transactions aborts the transaction on the coordinator, as a restarted process's would.
ABORT_RETRY_S = 45.0
# Fenced: another instance took the transactional id, or the coordinator timed out a transaction and
# bumped the epoch (see TransactionalProcessor._renew). Twice within FENCE_WINDOW_S: the former.
FENCED = frozenset({CKafkaError._FENCED, CKafkaError.PRODUCER_FENCED, CKafkaError.INVALID_PRODUCER_EPOCH})
FENCE_WINDOW_S = 60.0
# A producer that refuses to produce in its current transactional state ("Erroneous state"), as one
# did after two aborts while the active controller was lost: not fatal to librdkafka, but unusable.
UNUSABLE = frozenset({CKafkaError._STATE})
# The group coordinator moving or loading, as while the broker that held it is lost: librdkafka
# does not mark these retriable when reading committed offsets, yet asking again once the
# coordinator is found again succeeds (CI run 17 saw a results committer exit on NOT_COORDINATOR).
COORDINATOR_MOVING = frozenset({CKafkaError.NOT_COORDINATOR, CKafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                                CKafkaError.COORDINATOR_NOT_AVAILABLE, CKafkaError._WAIT_COORD,
                                CKafkaError._TIMED_OUT, CKafkaError._TRANSPORT, CKafkaError.REQUEST_TIMED_OUT})


class TransactionalProcessor(faust.Service):
    """Reads ``topics`` as group ``<prefix>-<name>``; ``process`` each batch inside a transaction."""

    name: str = "transactional"

    def __init__(self, rt: Runtime, topics: list[str], *, batch_size: int, fence_by_group: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rt = rt
        self.topics = topics
        self.batch_size = batch_size
        # Offsets committed to the group inside the transaction: the group coordinator then refuses
        # the commit of a member that lost its partitions (KIP-447), even when positions are also
        # recorded in the processor's own log.
        self.fence_by_group = fence_by_group
        # Stable across restarts of the same deployment: a restarted process fences its killed
        # predecessor and aborts its open transaction at once, instead of holding back
        # read_committed readers until the transaction times out.
        self.transactional_id = f"{rt.settings.kafka.topic_prefix}-{self.name}-{rt.settings.processing.instance}"
        self.consumer: Consumer | None = None
        self.producers: list[Producer] = []  # used in turn, one transaction each (see the module doc)
        self.producer: Producer | None = None  # the current batch's
        self.assigned = threading.Event()  # set once the group gave this member its partitions
        self.current: Message | None = None  # the record ``process`` is on (see ``records``)
        # Records that failed by their own fault, by (topic, partition, offset): dead-lettered, not
        # processed, when their batch is read again after the abort.
        self.poison: dict[tuple[str, int, int], Exception] = {}
        # Set while a batch that failed after its records is read again: see the module doc.
        self.isolating = False
        self.backoff = Backoff()
        self.fenced_at: float | None = None  # when a fence (or an unusable producer) was last answered with a new one
        self.caller = BoundedCaller(f"aios-{self.name}")  # transaction calls, bounded (see bounded.py)

    async def wait_assigned(self, timeout_s: float) -> None:
        """Until the group has assigned this member (its state rebuilt), so 'ready' means ready."""
        if not await asyncio.to_thread(self.assigned.wait, timeout_s):
            raise KafkaError(f"{self.name}: no partitions assigned within {timeout_s:.0f}s; is Kafka up, are "
                             "the topics created (aios topics create), and are there no more members than "
                             "partitions (AIOS_TOPIC_PARTITIONS)?")

    # --- what a processor implements -------------------------------------------------------

    @abstractmethod
    def process(self, batch: list[Message]) -> None:
        """Produce the batch's outputs with ``self.produce``; runs inside the open transaction.

        Called with an empty batch when nothing arrived, for timed work (retries, snapshots)."""

    def has_timed_work(self) -> bool:
        """Whether ``process`` has work with no input (a due retry, a status to refresh)."""
        return False

    def record_positions(self, positions: list[TopicPartition]) -> bool:
        """Write the batch's input positions into the processor's own log, inside the transaction,
        and return True; False (the default) has them committed to the consumer group instead."""
        return False

    def on_assigned(self, partitions: list[int]) -> dict[tuple[str, int], int]:
        """Partitions of the input topics were assigned (rebuild state for them here). Returns the
        positions to resume from, if the processor records them (``record_positions``)."""
        return {}

    def on_revoked(self, partitions: list[int]) -> None:
        """Partitions were taken away (drop their state)."""

    def on_aborted(self) -> dict[tuple[str, int], int]:
        """The batch's transaction was aborted: in-memory changes made by ``process`` must go.
        Returns the positions to read again from, if the processor records them."""
        return {}

    # --- the loop --------------------------------------------------------------------------

    async def on_start(self) -> None:
        s = self.rt.settings
        for transactional_id in (self.transactional_id, f"{self.transactional_id}-alt"):
            self.producers.append(await asyncio.to_thread(self._new_producer, transactional_id))
        self.producer = self.producers[0]
        self.consumer = make_consumer(s, group=f"{s.kafka.topic_prefix}-{self.name}")
        self.consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke)

    def _new_producer(self, transactional_id: str) -> Producer:
        s = self.rt.settings
        producer = Producer(producer_config(s, **{
            "transactional.id": transactional_id,
            "transaction.timeout.ms": s.kafka.transaction_timeout_ms,
            "linger.ms": 0,
        }))
        try:  # also fences a killed predecessor's producer of this id and aborts its transaction
            producer.init_transactions(30)
        except KafkaException as exc:
            raise KafkaError(f"{self.name} could not start its transactions: {exc}") from exc
        return producer

    def _bounded(self, what: str, call: Callable[[], T]) -> T:
        """A transaction call, given up with CallStuck if it outlives its own timeout (bounded.py)."""
        return self.caller.call(call, STUCK_AFTER_S, f"{self.name}: {what}")

    def _renew(self, producer: Producer, exc: Exception, *, stuck: bool = False) -> None:
        """``producer`` failed fatally: replace it with a new one of the same transactional id, as a
        restarted process would (its start aborts the failed transaction).

        Fenced is fatal too, and usually means another instance owns the id now; but a coordinator
        that times out a transaction while a broker is lost also bumps its epoch and fences the
        producer that is still in it. So a fence is answered with a new producer once; fenced again
        within FENCE_WINDOW_S, the process goes: a second instance is there, and it keeps the id.

        A producer left in a state where it cannot produce (UNUSABLE) is replaced the same way, once
        per window too: a restart would do no better. One ``stuck`` in an abort that does not
        complete, or in a call that never returns (CallStuck), is replaced whenever it happens: another
        instance would show as a fence instead."""
        err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
        renewable = stuck or (isinstance(err, CKafkaError) and (err.fatal() or err.code() in UNUSABLE))
        if not renewable:
            raise KafkaError(f"{self.name}: {err}") from exc
        if isinstance(err, CKafkaError) and (err.code() in FENCED or err.code() in UNUSABLE):
            now = time.monotonic()
            if self.fenced_at is not None and now - self.fenced_at < FENCE_WINDOW_S:
                raise KafkaError(f"{self.name}: fenced or unusable twice within {FENCE_WINDOW_S:.0f}s: another "
                                 f"instance may run as {self.transactional_id} ({err})") from exc
            self.fenced_at = now
        index = self.producers.index(producer)
        transactional_id = self.transactional_id if index == 0 else f"{self.transactional_id}-alt"
        log.warning("%s: its transactional producer failed (%s); starting a new one as %s", self.name,
                    err if err is not None else exc, transactional_id)
        TXN_RETRIES.labels(self.name, "new producer").inc()
        self.producers[index] = self.producer = self._new_producer(transactional_id)

    async def on_stop(self) -> None:
        self.caller.close()
        if self.consumer is not None:
            await asyncio.to_thread(self.consumer.close)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        resume = self.on_assigned(sorted({tp.partition for tp in partitions}))
        if resume:
            for tp in partitions:
                tp.offset = resume.get((tp.topic, tp.partition), tp.offset)
            consumer.assign(partitions)
        if partitions:
            self.assigned.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.on_revoked(sorted({tp.partition for tp in partitions}))

    @faust.Service.task
    async def _run(self) -> None:
        set_processor(self.name)
        while not self.should_stop:
            pause = await asyncio.to_thread(self.step)
            if pause:
                await asyncio.sleep(pause)  # a server is down: cancellable, so a stop is not held up

    def records(self, batch: list[Message]) -> Iterator[Message]:
        """The batch's records, one at a time, for ``process``: a record that failed when this batch
        was read before is dead-lettered (in this transaction) instead of yielded."""
        for msg in batch:
            failure = self.poison.pop(_where(msg), None)
            if failure is not None:
                self.dead_letter(msg, failure)
                continue
            self.current = msg
            yield msg
        self.current = None

    def dead_letter(self, msg: Message, exc: Exception, errors: list[str] | None = None,
                    key: str | None = None) -> None:
        """The record's bytes and why it failed, to the DLQ inside the open transaction."""
        letter = dead_letter_event(str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0),
                                   msg.key(), msg.value(), self.name, exc, errors)
        raw = msg.key()
        key = key or (raw.decode(errors="replace") if isinstance(raw, bytes) else str(msg.topic()))
        self.produce(self.rt.topics.dlq, self.rt.codec.encode("DeadLetter", letter, self.rt.topics.dlq), key,
                     headers=headers_for(letter))

    def take(self) -> list[Message]:
        consumer = self.consumer
        if consumer is None:
            raise KafkaError(f"{self.name} started without a consumer")
        good = []
        for msg in poll_batch(consumer, self.batch_size, POLL_S):
            err = msg.error()
            if err is None:
                good.append(msg)
            else:
                log.warning("%s: consume error: %s", self.name, err)
        return good

    def step(self) -> float:
        """One batch (possibly empty) in one transaction; returns how long to pause before the next
        (a backoff while a server is down, else 0)."""
        consumer, producer = self.consumer, self.producer
        if consumer is None or producer is None:
            raise KafkaError(f"{self.name} is not started")
        batch = self.take()
        if not batch and not self.has_timed_work():
            return 0.0
        started = time.perf_counter()
        try:
            producer.begin_transaction()
            self.process(batch)
            positions = [tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0] if batch else []
            recorded = bool(positions) and self.record_positions(positions)
            in_group = bool(positions) and (self.fence_by_group or not recorded)
            if in_group:
                metadata = consumer.consumer_group_metadata()
                _until_done(self.name, "send offsets", lambda: self._bounded(
                    "send offsets", lambda: producer.send_offsets_to_transaction(positions, metadata, TXN_CALL_S)))
            _until_done(self.name, "commit",
                        lambda: self._bounded("commit", lambda: producer.commit_transaction(TXN_CALL_S)))
        except CallStuck as exc:
            # Its transaction is aborted by the new producer's start, as a restarted process's would be.
            log.warning("%s: %s; the batch will be read again", self.name, exc)
            self._renew(producer, exc, stuck=True)
            self.rewind(self.on_aborted())
            return 0.0
        except KafkaException as exc:
            err = exc.args[0]
            if isinstance(err, CKafkaError) and err.txn_requires_abort():
                log.warning("%s: transaction aborted (%s); the batch will be read again", self.name, err)
                self._abort(producer)
            else:
                # Fatal: a new producer aborts the open transaction, as a restarted process would;
                # fenced, or anything else: the process goes down (its successor does the same).
                self._renew(producer, exc)
            self.rewind(self.on_aborted())
            return 0.0
        except Exception as exc:
            return self._failed(exc, bool(batch))
        self.backoff.reset()
        if batch:
            # Only a batch of records read again ends the isolating: timed work committed on its
            # own while the rewound records were still on their way (a fetch in flight) once ended
            # it, and the batch failed whole again, for good (tests/integration/test_poison.py).
            self.isolating = False
        # The next batch goes through the other producer, whose last commit has long completed.
        self.producer = self.producers[1] if producer is self.producers[0] else self.producers[0]
        if recorded and not in_group:
            # For lag metrics and tools only: the processor resumes from its own log.
            consumer.commit(offsets=positions, asynchronous=True)
        if batch:
            PROCESSING.labels(self.name).observe(time.perf_counter() - started)
        return 0.0

    def _abort(self, producer: Producer) -> None:
        """Abort the open transaction; a producer that cannot (it failed fatally, as when messages
        timed out while a broker was lost and the epoch bump was refused, or its abort did not
        complete within ABORT_RETRY_S) is replaced."""
        try:
            _until_done(self.name, "abort", lambda: self._bounded("abort", lambda: producer.abort_transaction(TXN_CALL_S)),
                        within_s=ABORT_RETRY_S)
        except (KafkaException, CallStuck) as exc:
            self._renew(producer, exc, stuck=True)

    def _failed(self, exc: Exception, had_records: bool) -> float:
        """``process`` raised: abort, rebuild, and read the batch again (see the module doc)."""
        failed, self.current = self.current, None
        verdict = verdict_for(self.name, exc)
        blameless = verdict is Verdict.DEAD_LETTER and failed is None
        if verdict is Verdict.FATAL or (blameless and (self.isolating or not had_records)):
            raise exc  # nothing to blame but the process: timed work failed on its own
        producer = self.producer
        if producer is not None:
            self._abort(producer)
        self.rewind(self.on_aborted())
        if verdict is Verdict.RETRY:
            pause = self.backoff.delay()
            log.warning("%s: %s; the batch will be read again in %.1fs", self.name, exc, pause)
            return pause
        if failed is None:
            self.isolating = True  # which record made the batch's outputs fail? Read it again to see
            log.warning("%s: the batch's outputs failed (%s: %s); reading it again record by record",
                        self.name, type(exc).__name__, exc)
            return 0.0
        self.poison[_where(failed)] = exc
        log.warning("%s: %s@%s/%s failed (%s: %s); it will be dead-lettered", self.name, failed.topic(),
                    failed.partition(), failed.offset(), type(exc).__name__, exc)
        return 0.0

    def produce(self, topic: str, value: bytes | None, key: bytes | str | None, partition: int | None = None,
                *, headers: Headers | None = None) -> None:
        """Send within the open transaction; ``headers`` carry an event's traceparent (``headers_for``)."""
        producer = self.producer
        if producer is None:
            raise KafkaError(f"{self.name} is not started")
        size, limit = message_size(key, value), self.rt.codec.max_message_bytes
        if size > limit:  # the production handler: the input that built it is dead-lettered
            raise RecordTooLargeError(f"a record of {size} bytes for {topic} is over the {limit} bytes a topic "
                                      "takes (AIOS_MAX_MESSAGE_BYTES)")
        while True:
            try:
                if partition is None:
                    producer.produce(topic, value=value, key=key, headers=headers)
                else:
                    producer.produce(topic, value=value, key=key, partition=partition, headers=headers)
                return
            except BufferError:
                producer.poll(0.05)  # the local queue is full: let deliveries make room
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if isinstance(err, CKafkaError) and err.code() == CKafkaError.MSG_SIZE_TOO_LARGE:
                    # Refused locally, before anything was sent: the record's fault, not the transaction's.
                    raise RecordTooLargeError(f"{len(value or b'')} bytes for {topic}: {err.str()}") from exc
                raise

    def rewind(self, resume: dict[tuple[str, int], int]) -> None:
        """Back to the last committed positions (``resume``, else the group's), so an aborted batch
        is read again."""
        consumer = self.consumer
        if consumer is None:
            return
        assignment = consumer.assignment()
        if not assignment:
            return
        committed = _until_done(self.name, "read committed offsets",
                                lambda: consumer.committed(assignment, timeout=10), also=COORDINATOR_MOVING)
        for tp in committed:
            tp.offset = resume.get((tp.topic, tp.partition), tp.offset)
            if tp.offset < 0:
                tp.offset = OFFSET_BEGINNING  # nothing committed yet in this partition
            consumer.seek(tp)


def _until_done(name: str, what: str, call: Callable[[], T], also: frozenset[int] = frozenset(),
                within_s: float = TXN_RETRY_S) -> T:
    """``call`` a transaction step again while its error is retriable (librdkafka says the same
    call may be repeated, or its code is in ``also``), for up to ``within_s``, and return what it
    returns. Any other error, or one that outlasts that, is raised to the caller: abortable ones
    abort the batch, fatal ones end the process."""
    deadline, pause = time.monotonic() + within_s, 0.1
    while True:
        try:
            return call()
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            retriable = (isinstance(err, CKafkaError) and (err.retriable() or err.code() in also)
                         and not err.txn_requires_abort())
            if not retriable or time.monotonic() + pause > deadline:
                raise
            log.warning("%s: %s did not complete (%s); trying again in %.1fs", name, what, err, pause)
            TXN_RETRIES.labels(name, what).inc()
            time.sleep(pause)
            pause = min(pause * 2, 5.0)


def _where(msg: Message) -> tuple[str, int, int]:
    return str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0)
