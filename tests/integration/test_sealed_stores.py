"""Restricted content sealed at rest (AIOS_ENCRYPTION_KEY), through the whole pipeline on the real
broker, Redis, Qdrant local mode and chdb: every store holds ciphertext (Kafka read raw, Redis read
raw, the Qdrant payloads, the ClickHouse rows), the processes with the key read the text back,
keys rotate, and a process without the key says so instead of failing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from confluent_kafka import KafkaError, TopicPartition

from aios.agents.llm.servers.openai import FakeOpenAI
from aios.connectors.context.windows import lane
from aios.schemas.sealed import SEALED_PREFIX, new_key, sealed_kid
from aios.streams.engine.runtime import open_context
from aios.streams.kafka import make_consumer, watermarks
from aios.streams.pipeline import running
from aios.streams.readmodels.task_client import Delivered, TaskClient, build_task
from aios.streams.settings import Settings
from aios.streams.topics import Topics, topic_specs
from tests.integration.helpers import wait_until
from tests.integration.test_memory import MODEL_DIR, delete_prefix

pytestmark = pytest.mark.integration

SECRET = "Rosalind Okafor severance 88,450"
OLD, NEW = f"k1:{new_key()}", f"k2:{new_key()}"
PROJECT = "vault"


@pytest.fixture
def local_llm() -> Iterator[FakeOpenAI]:
    """The wire-format server as a *local* model (local:llama3.1:8b): restricted tasks may use it."""
    with FakeOpenAI() as server:
        yield server


def sealed_settings(settings: Settings, local_llm: FakeOpenAI, ring: str) -> Settings:
    return settings.replace(llm="local:llama3.1:8b", local_llm_base_url=local_llm.base_url, llm_max_retries=0,
                            encryption_key=ring, vector_memory=True, embedding_model_dir=MODEL_DIR,
                            context_window_tokens=150, context_summary_tokens=60)


def raw_kafka(settings: Settings) -> dict[str, list[bytes]]:
    """Every record value of every topic of this prefix, as bytes on the broker."""
    # Until each partition's end (EOF): a topic written in transactions ends in a commit marker.
    consumer = make_consumer(settings, group="raw-reader", **{"enable.partition.eof": True})
    out: dict[str, list[bytes]] = {}
    try:
        for topic in [spec.name for spec in topic_specs(settings)]:  # the JSON and state topics too
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            for p in meta.partitions:
                low, high = watermarks(consumer, TopicPartition(topic, p))
                if high <= low:
                    continue
                consumer.assign([TopicPartition(topic, p, low)])
                while True:
                    msg = consumer.poll(5)
                    assert msg is not None, f"{topic}[{p}] ended before {high}"
                    if msg.error() is not None:
                        assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
                        break
                    out.setdefault(topic, []).append(msg.value() or b"")
    finally:
        consumer.close()
    return out


async def raw_redis(settings: Settings) -> dict[str, bytes]:
    """Every key of this prefix, its value(s) as bytes, whatever its type."""
    r = aioredis.Redis.from_url(settings.stores.redis_url)
    out: dict[str, bytes] = {}
    try:
        async for key in r.scan_iter(match=f"{settings.kafka.topic_prefix}:*", count=1000):
            kind = (await r.type(key)).decode()
            if kind == "string":
                value = await r.get(key) or b""
            elif kind == "list":
                value = b"\n".join(await r.lrange(key, 0, -1))
            elif kind == "hash":
                value = b"\n".join(k + b"=" + v for k, v in (await r.hgetall(key)).items())
            else:
                value = b"\n".join(sorted(await r.smembers(key))) if kind == "set" else b""
            out[key.decode()] = value
    finally:
        await r.aclose()
    return out


async def submit_restricted(settings: Settings, description: str) -> Delivered:
    client = TaskClient(settings)
    try:
        client.watch_results()
        task = build_task(description, project=PROJECT, privacy="restricted")
        client.submit(task)
        found = await asyncio.to_thread(client.wait, [task["task_id"]], 90)
        return found[task["task_id"]]
    finally:
        client.close()


async def test_restricted_content_is_ciphertext_in_every_store_and_readable_with_the_key(
        settings: Settings, local_llm: FakeOpenAI) -> None:
    s = sealed_settings(settings, local_llm, OLD)
    context = open_context(s)
    try:
        async with running(s, ["orchestrator", "results", "agents", "memory", "history"]) as live:
            delivered = [await submit_restricted(s, f"Draft the letter on the {SECRET}, part {i}.") for i in range(4)]
            # The reader with the key gets the text back: the local model restated the prompt.
            assert all(d.result["status"] == "succeeded" and not d.sealed for d in delivered)
            assert SECRET in delivered[0].output
            assert SECRET in json.dumps([r.body for r in local_llm.requests])  # the local model saw the text

            async def folded() -> bool:
                window = await context.read(lane("project", True), PROJECT)
                return window.summary is not None
            await wait_until(folded)  # the restricted lane's summary exists (and is sealed, below)
            store = live.runtime.store
            tables = ("tasks", "assignments", "results", "memory", "messages", "llm_calls", "events")

            def stored() -> dict[str, list[dict[str, Any]]]:
                return {t: store.query(f"SELECT * FROM aios.{t} FINAL WHERE project_id = '{PROJECT}'")  # noqa: S608
                        for t in tables}
            # results holds each task's attempt, final and committed result (the same sealed output).
            rows = await wait_until(lambda: (found := stored()) and len({r["task_id"] for r in found["results"]}) == 4
                                    and any(r["kind"] == "summary" for r in found["memory"]) and found, 90)
            vm = await live.runtime.vector_memory()
            points = await live.runtime.in_vector_thread(
                lambda: vm._client.scroll(vm.collection, limit=100, with_payload=True)[0])

        secret = SECRET.encode()
        # Kafka, read raw: no record of any topic holds the text; the restricted fields are sealed.
        kafka = raw_kafka(s)
        assert [t for t, values in kafka.items() if any(secret in v for v in values)] == []
        topics = Topics.from_settings(s)
        for topic in (topics.tasks, topics.role("general"), topics.attempts, topics.finals, topics.results,
                      topics.memory, topics.orchestrator_state):
            assert any(SEALED_PREFIX.encode() in v for v in kafka[topic]), topic
        # Redis, read raw: windows, fold lists, summaries and the LLM journal hold ciphertext.
        keys = await raw_redis(s)
        assert [k for k, v in keys.items() if secret in v] == []
        restricted_window = f"{s.kafka.topic_prefix}:ctx:{lane('project', True)}:{PROJECT}"
        assert SEALED_PREFIX.encode() in keys[restricted_window]
        journal = [v for k, v in keys.items() if k.startswith(f"{s.kafka.topic_prefix}:llm:{PROJECT}/")]
        assert journal and all(b'"sealed":"aios:sealed:v1:k1:' in v and b'"text":""' in v for v in journal)
        # Qdrant payloads: sealed text, marked restricted.
        assert points and all(p.payload["text"].startswith(SEALED_PREFIX) and p.payload["privacy"] == "restricted"
                              for p in points if p.payload["project"] == PROJECT)
        # ClickHouse rows: sealed descriptions, outputs and memory; the text is in no row of any table.
        assert [t for t, found in rows.items() if SECRET in json.dumps(found, default=str)] == []
        assert all(r["description"].startswith(SEALED_PREFIX) for r in rows["tasks"] + rows["assignments"])
        assert all(r["output"].startswith(SEALED_PREFIX) for r in rows["results"] if r["status"] == "succeeded")
        assert all(r["content"].startswith(SEALED_PREFIX) and r["privacy"] == "restricted" for r in rows["memory"]), [(r["kind"], r["content"][:30], r.get("privacy")) for r in rows["memory"]]
        # A pickup (status started) carries no output to seal.
        assert {sealed_kid(r["output"]) for r in rows["results"] if r["status"] != "started"} == {"k1"}

        # Rotation: the new key first, the old one still opens what it sealed.
        rotated = sealed_settings(settings, local_llm, f"{NEW},{OLD}").replace(topic_prefix=s.kafka.topic_prefix)
        async with running(rotated, ["orchestrator", "results", "agents", "memory"]):
            after = await submit_restricted(rotated, f"Close the file on the {SECRET}.")
        assert after.result["status"] == "succeeded" and SECRET in after.output
        assert sealed_kid(TaskClient(rotated).sealer.seal_task(build_task("x", privacy="restricted"))["description"]) \
            == "k2"
        old_result = {**delivered[0].result, "output": rows_output(rows, delivered[0])}
        assert SECRET in TaskClient(rotated).sealer.reveal_event("results", old_result)[0]["output"]
        # Retired: once k1 is dropped, what it sealed is reported as sealed, never a crash.
        retired = TaskClient(s.replace(encryption_key=NEW))
        opened, unreadable = retired.sealer.reveal_event("results", old_result)
        assert unreadable and opened["output"] == old_result["output"]
        # And a process without any key says so.
        keyless = TaskClient(s.replace(encryption_key=None))
        _, unreadable = keyless.sealer.reveal_event("results", old_result)
        assert unreadable and "k1" in Delivered(0, 0, old_result, sealed=True).output
    finally:
        await delete_prefix(context.redis, s.kafka.topic_prefix)
        await context.aclose()


def rows_output(rows: dict[str, list[dict[str, Any]]], delivered: Delivered) -> str:
    """The stored (sealed) output of a delivered result, as ClickHouse holds it."""
    outputs = {r["output"] for r in rows["results"]
               if r["task_id"] == delivered.result["task_id"] and r["status"] != "started"}  # a pickup has none
    assert len(outputs) == 1  # the attempt's sealed output, copied as it is to the final and the result
    return str(outputs.pop())


async def test_an_agent_without_the_key_fails_the_task_and_says_which_key(settings: Settings,
                                                                          local_llm: FakeOpenAI) -> None:
    submitter = sealed_settings(settings, local_llm, OLD)
    worker = submitter.replace(encryption_key=None)
    client = TaskClient(submitter)
    try:
        client.watch_results()
        task = build_task(f"Summarise the {SECRET}.", project=PROJECT, privacy="restricted")
        client.submit(task)
        async with running(worker, ["orchestrator", "results", "agents"]):
            delivered = (await asyncio.to_thread(client.wait, [task["task_id"]], 90))[task["task_id"]]
    finally:
        client.close()
    result = delivered.result
    assert result["status"] == "failed" and result["error_type"] == "KeyNotAvailableError"
    assert "'k1'" in result["error"] and "AIOS_ENCRYPTION_KEY" in result["error"]
    assert local_llm.requests == []  # nothing was asked of any model
