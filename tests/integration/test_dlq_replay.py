"""Dead letters read and replayed against the real Kafka and Redis: a poison task goes through the
orchestrator to the DLQ, is replayed (headers and the ledger record it), fails again, and a loop of
replays stops at AIOS_DLQ_REPLAY_LIMIT with a clear refusal; ``aios dlq list|replay`` do the same."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import redis.asyncio as aioredis
from click.testing import CliRunner, Result
from confluent_kafka import TopicPartition

from aios.cli import cli
from aios.connectors.context.replays import ReplayLedger
from aios.schemas import limits
from aios.schemas.events import envelope
from aios.streams.engine.records import dead_letter_event
from aios.streams.jobs.dlq_replay import (
    HEADER_COUNT,
    HEADER_OF,
    DlqReplayError,
    Letter,
    LetterFilter,
    Replayer,
    read_letters,
)
from aios.streams.kafka import EventProducer, make_consumer
from aios.streams.pipeline import running
from aios.streams.settings import Settings
from aios.streams.topics import Topics

pytestmark = pytest.mark.integration
POISON = b"\x00\x01 not a task at all \xff"


async def letters_until(settings: Settings, count: int, timeout_s: float = 60) -> list[Letter]:
    deadline = time.monotonic() + timeout_s
    while True:
        letters = await asyncio.to_thread(read_letters, settings, LetterFilter(), 0)
        if len(letters) >= count or time.monotonic() > deadline:
            assert len(letters) >= count, f"expected {count} dead letters, found {len(letters)}"
            return letters
        await asyncio.sleep(0.3)


def headers_at(settings: Settings, topic: str, partition: int, offset: int) -> dict[str, bytes]:
    consumer = make_consumer(settings, group=f"{settings.kafka.topic_prefix}-check")
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None and msg.offset() == offset:
                return dict(msg.headers() or [])
        raise AssertionError(f"no record at {topic}[{partition}]@{offset}")
    finally:
        consumer.close()


async def test_a_replay_loop_stops_at_the_limit(settings: Settings) -> None:
    s = settings.replace(dlq_replay_limit=2)
    topics = Topics.from_settings(s)
    redis = aioredis.Redis.from_url(s.stores.redis_url)
    ledger = ReplayLedger(redis, s.kafka.topic_prefix)
    producer = EventProducer(s)
    producer.send_raw(topics.tasks, POISON, key="poisoned")
    producer.flush()
    try:
        async with running(s, ["orchestrator"]):
            first = (await letters_until(s, 1))[0]
            assert (first.source_topic, first.processor, first.payload, first.key) == \
                (topics.tasks, "orchestrator", POISON, b"poisoned")
            assert first.error_type and first.error
            replayer = Replayer(s, ledger, by="test")
            try:
                dry = await replayer.replay([first], dry_run=True)
                assert [(o.outcome, o.count) for o in dry] == [("dry_run", 1)]
                assert len(await letters_until(s, 1)) == 1  # a dry run sends nothing

                done = (await replayer.replay([first]))[0]
                assert (done.outcome, done.count, done.topic) == ("replayed", 1, topics.tasks)
                headers = await asyncio.to_thread(headers_at, s, topics.tasks, done.partition or 0, done.offset or 0)
                assert headers[HEADER_COUNT] == b"1" and headers[HEADER_OF] == first.event_id.encode()
                # The orchestrator fails on it again: a new letter, a new id, the same record.
                second = (await letters_until(s, 2))[-1]
                assert second.event_id != first.event_id and second.fingerprint == first.fingerprint

                again = (await replayer.replay([second]))[0]
                assert (again.outcome, again.count) == ("replayed", 2)
                third = (await letters_until(s, 3))[-1]
                refused = (await replayer.replay([third]))[0]
                assert (refused.outcome, refused.count) == ("refused", 2)
                assert "AIOS_DLQ_REPLAY_LIMIT=2" in refused.reason and "fix the cause" in refused.reason
                # Replaying the first letter again is the same record: refused too.
                assert (await replayer.replay([first]))[0].outcome == "refused"
                await asyncio.sleep(1)
                assert len(await letters_until(s, 3)) == 3  # nothing more was sent

                log = await ledger.log()
                assert [(r.dead_letter_id, r.count, r.by) for r in log] == \
                    [(second.event_id, 2, "test"), (first.event_id, 1, "test")]
                with pytest.raises(DlqReplayError, match="the DLQ itself"):
                    await replayer.replay([first], to=topics.dlq)
                with pytest.raises(DlqReplayError, match="does not exist"):
                    await replayer.replay([first], to=f"{s.kafka.topic_prefix}.nowhere")
            finally:
                replayer.close()
    finally:
        await redis.aclose()


async def test_a_cut_payload_is_never_replayed(settings: Settings) -> None:
    topics = Topics.from_settings(settings)
    big = b"x" * (limits.MAX_DEAD_LETTER_PAYLOAD_BYTES + 10)
    producer = EventProducer(settings)
    producer.send(topics.dlq, "DeadLetter", dead_letter_event(topics.tasks, 0, 7, b"k", big, "orchestrator",
                                                              ValueError("too big")), key="k")
    producer.flush()
    letter = (await letters_until(settings, 1))[0]
    assert letter.cut
    redis = aioredis.Redis.from_url(settings.stores.redis_url)
    replayer = Replayer(settings, ReplayLedger(redis, settings.kafka.topic_prefix), by="test")
    try:
        outcome = (await replayer.replay([letter]))[0]
        assert outcome.outcome == "refused" and "payload was cut" in outcome.reason
    finally:
        replayer.close()
        await redis.aclose()


async def test_aios_dlq_list_and_replay(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIOS_TOPIC_PREFIX", settings.kafka.topic_prefix)
    monkeypatch.setenv("AIOS_DLQ_REPLAY_LIMIT", "1")
    topics = Topics.from_settings(settings)
    producer = EventProducer(settings)
    for processor, reason in (("orchestrator", ValueError("bad plan")), ("agents", KeyError("missing field"))):
        task = {**envelope(), "task_id": processor, "project_id": "p", "role": "general", "description": "d"}
        value = dead_letter_event(topics.tasks, 0, 1, b"k", json.dumps(task).encode(), processor, reason)
        producer.send(topics.dlq, "DeadLetter", value, key="k")
    producer.flush()
    await letters_until(settings, 2)

    def aios(*args: str) -> Result:
        return CliRunner().invoke(cli, list(args))

    async def run(*args: str) -> Result:
        return await asyncio.to_thread(aios, *args)

    listed = await run("dlq", "list", "--json")
    assert listed.exit_code == 0, listed.output
    doc = json.loads(listed.output.splitlines()[-1])
    assert [x["processor"] for x in doc["letters"]] == ["orchestrator", "agents"] and doc["replay_limit"] == 1
    assert doc["letters"][0]["preview_format"] == "text" and doc["letters"][0]["preview"].startswith('{"event_id"')
    only = json.loads((await run("dlq", "list", "--processor", "agents", "--json")).output.splitlines()[-1])
    assert [x["reason"] for x in only["letters"]] == ["'missing field'"]
    by_reason = json.loads((await run("dlq", "list", "--reason", "BAD PLAN", "--since", "1h", "--json"))
                           .output.splitlines()[-1])
    assert [x["processor"] for x in by_reason["letters"]] == ["orchestrator"]
    table = await run("dlq", "list")
    assert table.exit_code == 0 and "2 dead letters" in table.output

    target = doc["letters"][0]["id"]
    dry = await run("dlq", "replay", "--id", target, "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.output.splitlines()[-1])["outcomes"][0]["outcome"] == "dry_run"
    sent = await run("dlq", "replay", "--id", target, "--to", topics.tasks_json, "--json")
    assert sent.exit_code == 0, sent.output
    outcome = json.loads(sent.output.splitlines()[-1])["outcomes"][0]
    assert (outcome["outcome"], outcome["topic"], outcome["replays"]) == ("replayed", topics.tasks_json, 1)
    refused = await run("dlq", "replay", "--id", target)
    assert refused.exit_code != 0 and "AIOS_DLQ_REPLAY_LIMIT=1" in refused.output
    listed = json.loads((await run("dlq", "list", "--json")).output.splitlines()[-1])
    assert [x["replays"] for x in listed["letters"]] == [1, 0]  # counted per record: the other is another
    unknown = await run("dlq", "replay", "--id", "no-such-letter")
    assert unknown.exit_code != 0 and "aios dlq list" in unknown.output
    neither = await run("dlq", "replay")
    assert neither.exit_code == 2 and "--id ID" in neither.output
