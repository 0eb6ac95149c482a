"""The results committer: the one writer of ``aios.results`` and ``aios.project-status``.

The orchestrator's outbox, ``aios.finals``, carries terminal results and project status
snapshots. This processor copies each batch of finals in one Kafka transaction with the batch's
offsets (``transactional.py``), and drops a result whose task already has one, so ``aios.results``
holds exactly one result per task for anyone reading committed data
(``isolation.level=read_committed``, librdkafka's default). The set of finished tasks per
partition is rebuilt from ``aios.results`` itself when a partition is assigned, so it survives
restarts with no other store.

faust's own ``exactly_once`` guarantee was not used: faust-streaming's transactional mode has
open reports of duplicates after a kill (faust-streaming/faust#517), and it would put every
processor in transactions when only the orchestrator and this hop need them.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import faust
from confluent_kafka import Message

from aios.schemas.checks import check
from aios.schemas.errors import SchemaError, UnavailableError
from aios.streams.engine.failures import Backoff
from aios.streams.engine.records import log
from aios.streams.engine.runtime import Runtime
from aios.streams.engine.transactional import TransactionalProcessor
from aios.streams.kafka import read_partition
from aios.streams.metrics import EVENTS
from aios.streams.tracing import headers_for, parent_from, passed_on, span

NAME = "results"
BATCH_SIZE = 500


class ResultsCommitter(TransactionalProcessor):
    """Copies ``finals`` to ``results`` transactionally, one result per task."""

    name = NAME

    def __init__(self, rt: Runtime, **kwargs: Any) -> None:
        super().__init__(rt, [rt.topics.finals], batch_size=BATCH_SIZE, **kwargs)
        # partition -> (project, task id) of tasks with a committed result (plan task ids are
        # unique only within their project)
        self.done: dict[int, set[tuple[str, str]]] = {}
        self.added: list[tuple[int, tuple[str, str]]] = []  # this batch's additions, undone on abort

    async def on_start(self) -> None:
        await super().on_start()
        if self.rt.codec.registry is not None:
            # The bytes copied keep the ids the outbox's subjects gave them. A registry gives one
            # schema one id whatever the subject, so registering the same schemas under results'
            # and project-status' own subjects (<topic>-value) matches those ids, for readers that
            # look a topic's schema up by subject.
            t = self.rt.topics
            await asyncio.to_thread(self.rt.codec.register, "TaskResult", t.results)
            await asyncio.to_thread(self.rt.codec.register, "ProjectStatus", t.project_status)

    def on_assigned(self, partitions: list[int]) -> dict[tuple[str, int], int]:
        for p in partitions:
            self.done[p] = self._committed_tasks(p)
        return {}  # resume from the group's offsets, committed in each transaction

    def on_revoked(self, partitions: list[int]) -> None:
        for p in partitions:
            self.done.pop(p, None)

    def on_aborted(self) -> dict[tuple[str, int], int]:
        for partition, task in self.added:
            self.done.get(partition, set()).discard(task)
        self.added = []
        return {}

    def _committed_tasks(self, partition: int) -> set[tuple[str, str]]:
        """Tasks already on ``results`` in ``partition`` (finals and results are co-partitioned)."""
        done: set[tuple[str, str]] = set()
        backoff = Backoff()
        for msg in read_partition(self.rt.settings, self.rt.topics.results, partition):
            while True:
                try:
                    v = self.rt.codec.decode(msg.value(), expect="TaskResult").value
                    done.add((v["project_id"], v["task_id"]))
                    break
                except SchemaError:
                    break  # never written by us: nothing to deduplicate against
                except UnavailableError as exc:  # the registry: the set must be whole, so wait for it
                    delay = backoff.delay()
                    log.warning("%s: %s; decoding a result of partition %d again in %.1fs", NAME, exc, partition, delay)
                    time.sleep(delay)
        log.info("%s: partition %d has %d committed results", NAME, partition, len(done))
        return done

    def process(self, batch: list[Message]) -> None:
        self.added = []
        counts = {"committed": 0, "duplicate": 0, "status": 0, "dead_letter": 0}
        t = self.rt.topics
        for msg in self.records(batch):
            partition = int(msg.partition() or 0)
            try:
                decoded = self.rt.codec.decode(msg.value())
                kind = decoded.name.rsplit(".", 1)[-1]
                if kind not in ("TaskResult", "ProjectStatus"):
                    raise SchemaError(f"{t.finals} carries TaskResult and ProjectStatus events, not {kind}")
                check(kind, decoded.value)
            except SchemaError as exc:
                self.dead_letter(msg, exc)
                counts["dead_letter"] += 1
                continue
            # Same partition as the input (all keyed by project): a partition's dedup set covers
            # all its results, and a status is never visible before the results it counts.
            if kind == "ProjectStatus":
                self.produce(t.project_status, msg.value(), msg.key(), partition,
                             headers=passed_on(msg.headers()) or headers_for(decoded.value))
                counts["status"] += 1
                continue
            task = (decoded.value["project_id"], decoded.value["task_id"])
            done = self.done.setdefault(partition, set())
            if task in done:
                counts["duplicate"] += 1  # a repeated final: its task already has its one result
                continue
            with span("commit result", decoded.value["trace_id"], parent_from(msg.headers()),
                      attributes={"aios.task_id": task[1], "aios.project_id": task[0],
                                  "aios.status": decoded.value["status"], "messaging.system": "kafka",
                                  "messaging.destination.name": t.results}):
                self.produce(t.results, msg.value(), msg.key(), partition, headers=headers_for(decoded.value))
            done.add(task)
            self.added.append((partition, task))
            counts["committed"] += 1
        for outcome, n in counts.items():
            if n:
                EVENTS.labels(NAME, outcome).inc(n)


def register(app: faust.App, rt: Runtime) -> None:
    rt.services.append(ResultsCommitter(rt))
