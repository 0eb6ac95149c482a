"""The JSON ingress as an entry point: with AIOS_INGRESS_SUBMITTERS, a record whose submitter may
not create tasks in its project goes to the DLQ with the reason, the others become Tasks; and a
restricted task's description is sealed before it reaches aios.tasks."""

from __future__ import annotations

import json

import pytest

from aios.schemas.sealed import SEALED_PREFIX, new_key
from aios.streams.kafka import EventProducer, TopicReader
from aios.streams.pipeline import running
from aios.streams.settings import Settings
from aios.streams.topics import Topics
from tests.integration.helpers import wait_until

pytestmark = pytest.mark.integration


def read(settings: Settings, topic: str) -> list[dict[str, object]]:
    reader = TopicReader(settings, topic, from_beginning=True)
    try:
        return [dict(d.value) for _, d in reader.events(timeout_s=1) if not isinstance(d, Exception)]
    finally:
        reader.close()


async def test_submitters_outside_the_allow_list_are_dead_lettered(settings: Settings) -> None:
    s = settings.replace(ingress_submitters={"crm-connector": ["sales"], "ops": ["*"]},
                         encryption_key=f"k1:{new_key()}")
    topics = Topics.from_settings(s)
    records = [
        {"task_id": "ok-1", "description": "Follow up the lead", "project_id": "sales", "submitted_by": "crm-connector"},
        {"task_id": "no-1", "description": "Read the payroll", "project_id": "finance", "submitted_by": "crm-connector"},
        {"task_id": "no-2", "description": "Anything", "project_id": "sales"},  # submitted_by defaults to "json"
        {"task_id": "ok-2", "description": "Rotate the keys of the vault", "project_id": "infra",
         "submitted_by": "ops", "privacy": "restricted"},
    ]
    producer = EventProducer(s)
    for r in records:
        producer.send_raw(topics.tasks_json, json.dumps(r).encode(), key=str(r["project_id"]))
    producer.flush()
    async with running(s, ["json-ingress"]):
        tasks = await wait_until(lambda: len(found := read(s, topics.tasks)) == 2 and found, 60)
        letters = await wait_until(lambda: len(found := read(s, topics.dlq)) == 2 and found, 30)
    assert {t["task_id"] for t in tasks} == {"ok-1", "ok-2"}
    vault = next(t for t in tasks if t["task_id"] == "ok-2")
    assert str(vault["description"]).startswith(SEALED_PREFIX)  # sealed before it reached aios.tasks
    reasons = {json.loads(bytes(letter["payload"]))["task_id"]: str(letter["error"])  # type: ignore[arg-type]
               for letter in letters}
    assert "may not create tasks in project 'finance'" in reasons["no-1"]
    assert "submitter 'json'" in reasons["no-2"] and "AIOS_INGRESS_SUBMITTERS" in reasons["no-2"]
    assert {letter["processor"] for letter in letters} == {"json-ingress"}
    assert {letter["error_type"] for letter in letters} == {"SubmitterNotAllowedError"}
