"""The batch runtime model on the real broker: a batch that fails for one record's sake is applied
again record by record, so that record alone is dead-lettered and the rest applied, and the offsets
move on; an unreachable store is waited out, and nothing is dead-lettered for it."""

from __future__ import annotations

import faust
import pytest
from confluent_kafka import Message

from aios.connectors.errors import StoreUnavailableError
from aios.streams.engine.app import running
from aios.streams.engine.batch import BatchProcessor
from aios.streams.engine.runtime import Runtime
from aios.streams.kafka import EventProducer, TopicReader
from aios.streams.readmodels.task_client import build_task
from aios.streams.settings import Settings
from tests.integration.helpers import wait_until

pytestmark = pytest.mark.integration


class Picky(BatchProcessor):
    """Applies Tasks; one whose description is "boom" makes a whole batch raise, as a bug would;
    "flaky" finds the store down twice before it is applied."""

    name = "picky"

    def __init__(self, rt: Runtime) -> None:
        super().__init__(rt, [rt.topics.tasks], batch_size=100, wait_s=0.2)
        self.applied: list[str] = []
        self.outages = 2

    async def apply(self, batch: list[Message]) -> None:
        tasks = [self.rt.codec.decode(m.value()).value for m in batch]
        if any(t["description"] == "boom" for t in tasks):
            raise RuntimeError("boom: a record this handler cannot take")
        if any(t["description"] == "flaky" for t in tasks) and self.outages:
            self.outages -= 1
            raise StoreUnavailableError("the store is down")
        self.applied += [t["task_id"] for t in tasks]


async def test_one_bad_record_is_dead_lettered_and_the_rest_of_its_batch_applied(settings: Settings) -> None:
    picky: list[Picky] = []

    def register(app: faust.App, rt: Runtime) -> None:
        picky.append(Picky(rt))
        rt.services.append(picky[0])

    tasks = [build_task(d, project="p") for d in ("one", "boom", "flaky", "two")]
    producer = EventProducer(settings)
    for task in tasks:  # one key: one partition, one batch
        producer.send(f"{settings.kafka.topic_prefix}.tasks", "Task", task, key="p")
    producer.flush()
    async with running(settings, [register], "picky") as live:
        await wait_until(lambda: {t["task_id"] for t in tasks if t["description"] != "boom"} <= set(picky[0].applied))
        live.check()
    reader = TopicReader(settings, f"{settings.kafka.topic_prefix}.dlq", from_beginning=True)
    try:
        letters = [d.value for _, d in reader.events(timeout_s=3) if not isinstance(d, Exception)]
    finally:
        reader.close()
    assert [(d["processor"], d["error_type"], d["source_offset"]) for d in letters] == [("picky", "RuntimeError", 1)]
    assert "boom: a record this handler cannot take" in letters[0]["error"]
    assert picky[0].outages == 0, "the store outage was waited out, not dead-lettered"
