"""The results committer: the one writer of ``aios.results`` and ``aios.project-status``, in Kafka
transactions.

The orchestrator is at-least-once: after a crash it may emit a task's terminal result again
(same event id). This processor makes ``aios.results`` exactly-once for anyone reading committed
data (``isolation.level=read_committed``, librdkafka's default): each batch of ``aios.finals`` (the
orchestrator's outbox: terminal results and project status snapshots) is copied in one transaction
together with the batch's consumer offsets, and a result whose task already has one is dropped. The set of finished tasks per partition is rebuilt from
``aios.results`` itself when a partition is assigned, so it survives restarts with no other store.

faust's own ``exactly_once`` guarantee was not used: faust-streaming's transactional mode has
open reports of duplicates after a kill (faust-streaming/faust#517), and it would put every
processor in transactions when only this hop needs them.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import faust
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, Producer, TopicPartition
from confluent_kafka import KafkaError as CKafkaError

from schemas.errors import SchemaError
from streams.errors import KafkaError
from streams.kafka import make_consumer, producer_config
from streams.metrics import EVENTS, PROCESSING
from streams.processors.common import dead_letter_event, log
from streams.runtime import Runtime

NAME = "results"
BATCH_SIZE = 500
WAIT_S = 0.005


class ResultsCommitter(faust.Service):
    """Copies ``finals`` to ``results`` transactionally, one result per task."""

    def __init__(self, rt: Runtime, app_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rt = rt
        # Stable across restarts of the same deployment: a restarted committer fences its killed
        # predecessor and aborts its open transaction at once, instead of stalling read_committed
        # readers until the transaction times out.
        self.transactional_id = f"{app_id}-{NAME}-{rt.settings.instance}"
        self.consumer: Consumer | None = None
        self.producer: Producer | None = None
        # partition -> (project, task id) of tasks with a committed result (plan task ids are
        # unique only within their project)
        self.done: dict[int, set[tuple[str, str]]] = {}

    async def on_start(self) -> None:
        s = self.rt.settings
        self.producer = Producer(producer_config(s, **{
            "transactional.id": self.transactional_id,
            "transaction.timeout.ms": s.transaction_timeout_ms,
        }))
        try:
            await asyncio.to_thread(self.producer.init_transactions, 30)
        except KafkaException as exc:
            raise KafkaError(f"results committer could not start its transactions: {exc}") from exc
        self.consumer = make_consumer(s, group=f"{s.topic_prefix}-{NAME}", **{"fetch.wait.max.ms": 5})
        self.consumer.subscribe([self.rt.topics.finals], on_assign=self._on_assign, on_revoke=self._on_revoke)

    async def on_stop(self) -> None:
        if self.consumer is not None:
            await asyncio.to_thread(self.consumer.close)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.done[tp.partition] = self._committed_tasks(tp.partition)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.done.pop(tp.partition, None)

    def _committed_tasks(self, partition: int) -> set[tuple[str, str]]:
        """Task ids already on ``results`` in ``partition`` (finals and results are co-partitioned)."""
        s, topic = self.rt.settings, self.rt.topics.results
        # Read to the partition's end, told by an EOF event: the consumer's fetcher rides out
        # leader elections (right after topic creation), where watermark queries fail.
        reader = make_consumer(s, group=f"{s.topic_prefix}-{NAME}-rebuild", **{"enable.partition.eof": True})
        done: set[tuple[str, str]] = set()
        try:
            reader.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
            deadline = time.monotonic() + 60
            while True:
                if time.monotonic() > deadline:
                    raise KafkaError(f"could not read {topic}[{partition}] to its end within 60s")
                msgs = reader.consume(1000, 0.5)
                if any(_is_eof(m) for m in msgs):
                    msgs = [m for m in msgs if m.error() is None]
                    done.update(self._task_ids(msgs))
                    break
                done.update(self._task_ids([m for m in msgs if m.error() is None]))
        finally:
            reader.close()
        log.info("%s: partition %d has %d committed results", NAME, partition, len(done))
        return done

    def _task_ids(self, msgs: list[Message]) -> list[tuple[str, str]]:
        ids = []
        for msg in msgs:
            try:
                v = self.rt.codec.decode(msg.value(), expect="TaskResult").value
                ids.append((v["project_id"], v["task_id"]))
            except SchemaError:
                continue  # never written by us: nothing to deduplicate against
        return ids

    @faust.Service.task
    async def _run(self) -> None:
        consumer = self.consumer
        if consumer is None:
            raise KafkaError("results committer started without a consumer")
        while not self.should_stop:
            batch = await asyncio.to_thread(consumer.consume, BATCH_SIZE, WAIT_S)
            batch = [m for m in batch if m.error() is None]
            if batch:
                started = time.perf_counter()
                await asyncio.to_thread(self._transact, batch)
                PROCESSING.labels(NAME).observe(time.perf_counter() - started)

    def _transact(self, batch: list[Message]) -> None:
        consumer, producer = self.consumer, self.producer
        assert consumer is not None and producer is not None  # noqa: S101 - set in on_start
        added: list[tuple[int, tuple[str, str]]] = []
        try:
            producer.begin_transaction()
            counts = self._copy(batch, producer, added)
            positions = [tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0]
            producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata())
            producer.commit_transaction()
        except KafkaException as exc:
            err = exc.args[0]
            if not (isinstance(err, CKafkaError) and err.txn_requires_abort()):
                raise KafkaError(f"results committer: {err}") from exc  # fatal (e.g. fenced): crash
            log.warning("%s: transaction aborted (%s); the batch will be retried", NAME, err)
            producer.abort_transaction()
            for partition, task in added:
                self.done.get(partition, set()).discard(task)
            self._rewind(consumer)
            return
        for outcome, n in counts.items():
            EVENTS.labels(NAME, outcome).inc(n)

    def _copy(self, batch: list[Message], producer: Producer,
              added: list[tuple[int, tuple[str, str]]]) -> dict[str, int]:
        counts = {"committed": 0, "duplicate": 0, "status": 0, "dead_letter": 0}
        t = self.rt.topics
        for msg in batch:
            partition = int(msg.partition() or 0)
            try:
                decoded = self.rt.codec.decode(msg.value())
                kind = decoded.name.rsplit(".", 1)[-1]
                if kind not in ("TaskResult", "ProjectStatus"):
                    raise SchemaError(f"{t.finals} carries TaskResult and ProjectStatus events, not {kind}")
            except SchemaError as exc:
                letter = dead_letter_event(str(msg.topic()), partition, int(msg.offset() or 0), msg.key(),
                                           msg.value(), NAME, exc)
                producer.produce(t.dlq, value=self.rt.codec.encode("DeadLetter", letter, t.dlq), key=msg.key())
                counts["dead_letter"] += 1
                continue
            # Same partition as the input (all keyed by project): a partition's dedup set covers
            # all its results, and a status is never visible before the results it counts.
            if kind == "ProjectStatus":
                producer.produce(t.project_status, value=msg.value(), key=msg.key(), partition=partition)
                counts["status"] += 1
                continue
            task = (decoded.value["project_id"], decoded.value["task_id"])
            done = self.done.setdefault(partition, set())
            if task in done:
                counts["duplicate"] += 1  # a replayed final: its task already has its one result
                continue
            producer.produce(t.results, value=msg.value(), key=msg.key(), partition=partition)
            done.add(task)
            added.append((partition, task))
            counts["committed"] += 1
        return counts

    def _rewind(self, consumer: Consumer) -> None:
        """Back to the last committed offsets, so an aborted batch is read again."""
        for tp in consumer.committed(consumer.assignment(), timeout=10):
            if tp.offset < 0:
                tp.offset = OFFSET_BEGINNING  # nothing committed yet in this partition
            consumer.seek(tp)


def _is_eof(msg: Message) -> bool:
    err = msg.error()
    return err is not None and err.code() == CKafkaError._PARTITION_EOF


def register(app: faust.App, rt: Runtime) -> None:
    rt.services.append(ResultsCommitter(rt, str(app.conf.id)))
