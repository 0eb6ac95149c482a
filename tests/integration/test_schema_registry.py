"""The Confluent wire format against a real schema registry server over HTTP.

The server is AxonOps Schema Registry (Go, the Confluent Schema Registry REST API, in memory),
built from the Go module proxy by ``infra/schema-registry/build.sh``. confluent-kafka's client
talks to it as to Confluent's: subjects, global ids, BACKWARD checks and the error codes.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from aios.connectors.history.writer import Record, write_batch
from aios.schemas.codec import CONFLUENT_MAGIC, Codec, ConfluentRegistry, WireFormat
from aios.schemas.errors import EncodeError, RegistryUnavailableError, UndecodableError
from aios.streams.kafka import read_partition
from aios.streams.pipeline import running
from aios.streams.processors import PROCESSORS
from aios.streams.settings import Settings
from tests.integration.helpers import submit_and_wait, wait_until
from tests.integration.local_servers import SchemaRegistry
from tests.unit.schemas import RECORD_NAMES, load_raw, sample_value
from tests.unit.schemas.test_codec import (
    catalog_with_current,
    compatibility_cases,
    is_backward_compatible,
    old_task_raw,
    old_task_value,
)

pytestmark = pytest.mark.integration


def topic() -> str:
    return f"reg{uuid.uuid4().hex[:8]}.tasks"  # a subject of its own per test: the server is shared


@pytest.mark.parametrize("name", RECORD_NAMES)
def test_every_record_type_registers_and_a_fresh_reader_fetches_it_by_id(schema_registry: SchemaRegistry,
                                                                          name: str) -> None:
    t = topic()
    data = Codec(registry=ConfluentRegistry(schema_registry.url)).encode(name, sample_value(name), topic=t)
    assert data[0] == CONFLUENT_MAGIC
    schema_id = int.from_bytes(data[1:5], "big")
    client = SchemaRegistryClient({"url": schema_registry.url})
    latest = client.get_latest_version(f"{t}-value")
    assert (latest.schema_id, latest.version) == (schema_id, 1)
    assert json.loads(latest.schema.schema_str)["name"] == load_raw(name)["name"]

    reader = Codec(registry=ConfluentRegistry(schema_registry.url))  # empty cache: GET /schemas/ids/{id}
    decoded = reader.decode(data, expect=name)
    assert decoded.format is WireFormat.CONFLUENT
    assert decoded.value == sample_value(name)


def test_an_old_writer_and_a_new_one_are_two_versions_under_backward(schema_registry: SchemaRegistry) -> None:
    t = topic()
    client = SchemaRegistryClient({"url": schema_registry.url})
    client.set_compatibility(f"{t}-value", "BACKWARD")
    old_data = Codec(catalog_with_current(old_task_raw()), registry=ConfluentRegistry(schema_registry.url)).encode(
        "Task", old_task_value(), topic=t)
    new_data = Codec(registry=ConfluentRegistry(schema_registry.url)).encode("Task", sample_value("Task"), topic=t)
    assert old_data[1:5] != new_data[1:5]
    assert client.get_versions(f"{t}-value") == [1, 2]

    reader = Codec(registry=ConfluentRegistry(schema_registry.url))
    assert reader.decode(old_data).value == {**old_task_value(), "privacy": "normal", "submitted_by": "unknown",
                                             "metadata": {}}
    assert reader.decode(new_data).value == sample_value("Task")


@pytest.mark.parametrize(("case", "old", "new", "_value", "expected"), compatibility_cases(),
                         ids=[c[0] for c in compatibility_cases()])
def test_the_servers_backward_check_agrees_with_ours(schema_registry: SchemaRegistry, case: str, old: dict[str, Any],
                                                     new: dict[str, Any], _value: Any, expected: bool) -> None:
    subject = f"{topic()}-value"
    client = SchemaRegistryClient({"url": schema_registry.url})
    client.set_compatibility(subject, "BACKWARD")
    client.register_schema(subject, Schema(json.dumps(old), "AVRO"))
    assert is_backward_compatible(old, new) is expected  # our rule, as the unit tests check it
    assert client.test_compatibility(subject, Schema(json.dumps(new), "AVRO")) is expected, case
    if expected:
        client.register_schema(subject, Schema(json.dumps(new), "AVRO"))
        assert client.get_versions(subject) == [1, 2]
    else:
        with pytest.raises(SchemaRegistryError) as refused:
            client.register_schema(subject, Schema(json.dumps(new), "AVRO"))
        assert refused.value.http_status_code == 409
        assert client.get_versions(subject) == [1]


def test_an_incompatible_writer_is_a_clear_encode_error(schema_registry: SchemaRegistry) -> None:
    t = topic()
    registry = ConfluentRegistry(schema_registry.url)
    Codec(registry=registry).encode("Task", sample_value("Task"), topic=t)
    required = load_raw("Task")
    required["fields"] = [*required["fields"], {"name": "owner", "type": "string"}]
    writer = Codec(catalog_with_current(required), registry=ConfluentRegistry(schema_registry.url))
    with pytest.raises(EncodeError, match=f"schema registry rejected subject '{t}-value'.*409"):
        writer.encode("Task", {**sample_value("Task"), "owner": "ops"}, topic=t)


def test_an_id_the_server_does_not_know_is_undecodable(schema_registry: SchemaRegistry) -> None:
    reader = Codec(registry=ConfluentRegistry(schema_registry.url))
    with pytest.raises(UndecodableError, match="schema id 987654 is unknown to the registry.*40403"):
        reader.decode(bytes([CONFLUENT_MAGIC]) + (987654).to_bytes(4, "big") + b"\x00")


def test_an_unreachable_registry_is_not_the_records_fault() -> None:
    # Valid records were once dead-lettered when the registry was down: now it is a RegistryUnavailableError,
    # which processors wait out (streams/engine/failures.py), for reading and writing alike.
    codec = Codec(registry=ConfluentRegistry("http://127.0.0.1:1"))
    with pytest.raises(RegistryUnavailableError, match="did not answer for schema id 1"):
        codec.decode(bytes([CONFLUENT_MAGIC]) + (1).to_bytes(4, "big") + b"\x00")
    with pytest.raises(RegistryUnavailableError, match="did not answer registering 'x.tasks-value'"):
        codec.encode("Task", sample_value("Task"), topic="x.tasks")


def test_the_history_sink_stores_registry_framed_events_natively(schema_registry: SchemaRegistry,
                                                                  session_data_dir: Any) -> None:
    # Confluent framing resolves the writer by id over HTTP, then the transcoder reads the body.
    from aios.connectors.history.chdb_store import ChdbStore
    from tests.integration.helpers import assert_stored_once, records

    store = ChdbStore.open(session_data_dir / "chdb")
    codec = Codec(registry=ConfluentRegistry(schema_registry.url), validate=False)
    project = f"reg-{uuid.uuid4().hex[:8]}"
    plain = records(Codec(validate=False), project)
    framed = [Record(r.topic, r.partition, r.offset, codec.encode(d.name.rsplit(".", 1)[-1], d.value, topic=r.topic))
              for r in plain if (d := codec.decode(r.value))]
    assert all(r.value and r.value[0] == CONFLUENT_MAGIC for r in framed)
    reader = Codec(registry=ConfluentRegistry(schema_registry.url), validate=False)
    result = write_batch(store, reader, framed)
    assert (result.stored, result.native, result.rejected) == (12, 12, [])
    assert_stored_once(store, reader, framed, project)


async def test_the_whole_pipeline_runs_on_the_confluent_wire_format(settings: Settings,
                                                                     schema_registry: SchemaRegistry) -> None:
    # AIOS_SCHEMA_REGISTRY_URL set: every producer registers <topic>-value and frames by id.
    s = settings.replace(schema_registry_url=schema_registry.url)
    project = f"reg-{uuid.uuid4().hex[:8]}"
    async with running(s, list(PROCESSORS)) as live:
        result = await submit_and_wait(s, "Summarise the design of a rate limiter", project=project)
        assert result["status"] == "succeeded" and "rate limiter" in result["output"]
        store = live.runtime.store
        def stored() -> dict[str, int] | None:
            c = store.counts_by_type(project_id=project)
            return c if c.get("TaskResult", 0) >= 3 and c.get("LlmCall") and c.get("MemoryEvent") else None

        counts = await wait_until(stored)
        # TaskResults: the agent's pickup (started), its attempt and the committed result.
        assert counts["Task"] == counts["Assignment"] == counts["LlmCall"] == 1 and counts["TaskResult"] == 3
        live.check()

    framed = [m for p in range(s.kafka.topic_partitions) for m in read_partition(s, f"{s.kafka.topic_prefix}.results", p)]
    assert framed and all((m.value() or b"")[:1] == bytes([CONFLUENT_MAGIC]) for m in framed)
    subjects = set(SchemaRegistryClient({"url": schema_registry.url}).get_subjects())
    p = s.kafka.topic_prefix
    assert {f"{p}.{t}-value" for t in ("tasks", "agent.general", "attempts", "llm-calls", "memory")} <= subjects
    # The outbox carries two record types (TopicRecordNameStrategy); the results committer forwards
    # its bytes to results and project-status unchanged, and registers the same schemas under those
    # topics' own subjects: one schema, one id, so the ids in the copied bytes are theirs.
    assert {f"{p}.finals-aios.v1.TaskResult", f"{p}.finals-aios.v1.ProjectStatus"} <= subjects
    client = SchemaRegistryClient({"url": schema_registry.url})
    results_id = client.get_latest_version(f"{p}.results-value").schema_id
    assert {int.from_bytes((m.value() or b"")[1:5], "big") for m in framed} == {results_id}
    assert client.get_latest_version(f"{p}.project-status-value").schema_id == \
        client.get_latest_version(f"{p}.finals-aios.v1.ProjectStatus").schema_id


def test_a_topic_of_two_record_types_needs_a_subject_per_record(schema_registry: SchemaRegistry) -> None:
    t = topic()
    status = sample_value("ProjectStatus")
    one_subject = Codec(registry=ConfluentRegistry(schema_registry.url))
    one_subject.encode("TaskResult", sample_value("TaskResult"), topic=t)
    with pytest.raises(EncodeError, match="409"):  # <topic>-value holds TaskResult: another record is "incompatible"
        one_subject.encode("ProjectStatus", status, topic=t)
    mixed = Codec(registry=ConfluentRegistry(schema_registry.url), mixed_topics=frozenset({t}))
    data = mixed.encode("ProjectStatus", status, topic=t)
    mixed.encode("TaskResult", sample_value("TaskResult"), topic=t)
    subjects = set(SchemaRegistryClient({"url": schema_registry.url}).get_subjects())
    assert {f"{t}-aios.v1.ProjectStatus", f"{t}-aios.v1.TaskResult"} <= subjects
    assert Codec(registry=ConfluentRegistry(schema_registry.url)).decode(data).value == status
