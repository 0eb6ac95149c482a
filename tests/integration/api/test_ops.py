"""The operators' routes against the real Kafka and Redis: the Kafka view (topics, offsets, rates,
each group's lag now and over time, live over a WebSocket), and the DLQ list and replay with their
roles (operators and admins for every project only) and the refusal past the replay limit."""

from __future__ import annotations

import json

import pytest
from confluent_kafka import TopicPartition
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from aios.streams.engine.records import dead_letter_event
from aios.streams.kafka import EventProducer, make_consumer
from aios.streams.settings import Settings
from aios.streams.topics import Topics
from tests.integration.api.helpers import api_client, key_headers, poll

pytestmark = pytest.mark.integration


async def test_the_kafka_view_shows_topics_offsets_rates_and_lag(settings: Settings) -> None:
    s = settings.replace(api_kafka_sample_s=0.3)
    topics = Topics.from_settings(s)
    producer = EventProducer(s)
    for i in range(30):
        producer.send_raw(topics.messages, b"m%d" % i, key="k")  # one key: one partition
    producer.flush()
    async with api_client(s) as api:
        reader = await key_headers(api, "viewer", ("*",))
        first = await poll(lambda: api.get("/v1/kafka", headers=reader), lambda r: r.json()["at"] is not None)
        doc = first.json()
        names = {t["topic"]: t for t in doc["topics"]}
        assert topics.tasks in names and topics.dlq in names
        assert all(t.startswith(f"{s.kafka.topic_prefix}.") for t in names)  # this deployment's topics only
        written = names[topics.messages]
        assert written["partitions"] == len(written["end_offsets"]) and sum(written["end_offsets"]) == 30

        partition = next(p for p, end in enumerate(written["end_offsets"]) if end == 30)
        group = f"{s.kafka.topic_prefix}-ops-test"
        consumer = make_consumer(s, group=group)
        consumer.commit(offsets=[TopicPartition(topics.messages, partition, 10)], asynchronous=False)
        lagging = await poll(lambda: api.get("/v1/kafka", headers=reader),
                             lambda r: any(g["group"] == group for g in r.json()["groups"]))
        g = next(g for g in lagging.json()["groups"] if g["group"] == group)
        assert g["lag"] == 20 and g["partitions"] == [
            {"topic": topics.messages, "partition": partition, "committed": 10, "end": 30, "lag": 20}]
        for i in range(10):
            producer.send_raw(topics.messages, b"more%d" % i, key="k")
        producer.flush()
        consumer.commit(offsets=[TopicPartition(topics.messages, partition, 40)], asynchronous=False)
        consumer.close()
        await poll(lambda: api.get("/v1/kafka", headers=reader),
                   lambda r: any(g["group"] == group and g["lag"] == 0 for g in r.json()["groups"]))
        rated = await poll(lambda: api.get("/v1/kafka", headers=reader),
                           lambda r: all(t["rate_per_s"] is not None for t in r.json()["topics"]))
        assert all(t["rate_per_s"] >= 0 for t in rated.json()["topics"])

        history = (await api.get("/v1/kafka/lag", headers=reader)).json()
        series = next(x for x in history["series"] if x["group"] == group)
        assert len(series["lag"]) == len(history["at"]) and 20 in series["lag"] and series["lag"][-1] == 0
        assert history["window_s"] == 3600
        per_partition = (await api.get(f"/v1/kafka/lag?group={group}&since_s=3600", headers=reader)).json()
        assert [(x["topic"], x["partition"]) for x in per_partition["series"]] == [(topics.messages, partition)]

        port = api.base_url.port
        key = reader["Authorization"].split()[1]
        async with connect(f"ws://127.0.0.1:{port}/v1/kafka/stream?access_token={key}") as ws:
            one = json.loads(await ws.recv())
            two = json.loads(await ws.recv())
            assert two["seq"] > one["seq"] and {t["topic"] for t in two["topics"]} >= {topics.tasks}

        scoped = await key_headers(api, "admin", ("p",))
        assert (await api.get("/v1/kafka", headers=scoped)).status_code == 403
        scoped_key = scoped["Authorization"].split()[1]
        with pytest.raises(ConnectionClosed) as closed:
            async with connect(f"ws://127.0.0.1:{port}/v1/kafka/stream?access_token={scoped_key}") as ws:
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
        assert (await api.get("/v1/kafka?bogus=1", headers=reader)).status_code == 400
        assert (await api.get("/v1/kafka")).status_code == 401


async def test_dlq_list_and_replay_for_operators_only_and_refused_past_the_limit(settings: Settings) -> None:
    s = settings.replace(dlq_replay_limit=1)
    topics = Topics.from_settings(s)
    producer = EventProducer(s)
    value = dead_letter_event(topics.tasks, 0, 3, b"k", b"\xc3\x01garbage", "orchestrator", ValueError("no schema"))
    producer.send(topics.dlq, "DeadLetter", value, key="k")
    producer.send(topics.dlq, "DeadLetter", dead_letter_event(topics.results, 1, 4, None, b"plain text", "agents",
                                                              KeyError("x")), key="r")
    producer.flush()
    async with api_client(s) as api:
        operator = await key_headers(api, "operator", ("*",))
        for role, projects in (("viewer", ("*",)), ("submitter", ("*",)), ("operator", ("p",)), ("admin", ("p",))):
            other = await key_headers(api, role, projects)
            assert (await api.get("/v1/dlq", headers=other)).status_code == 403, role
            r = await api.post("/v1/dlq/replay", json={"ids": [value["event_id"]]}, headers=other)
            assert r.status_code == 403, role
        listed = await poll(lambda: api.get("/v1/dlq", headers=operator), lambda r: len(r.json()["letters"]) == 2)
        # Oldest first, but the two letters are on two partitions, produced in the same millisecond:
        # tell them apart by id, not by position.
        letters = listed.json()["letters"]
        first = next(x for x in letters if x["id"] == value["event_id"])
        second = next(x for x in letters if x["id"] != value["event_id"])
        assert (first["id"], first["processor"], first["reason"], first["error_type"]) == \
            (value["event_id"], "orchestrator", "no schema", "ValueError")
        assert (first["preview_format"], first["preview"]) == ("hex", "c3 01 67 61 72 62 61 67 65")
        assert (second["preview_format"], second["preview"], second["key"]) == ("text", "plain text", None)
        assert [x["id"] for x in (await api.get("/v1/dlq?processor=agents", headers=operator)).json()["letters"]] \
            == [second["id"]]
        assert (await api.get("/v1/dlq?reason=SCHEMA&since_s=600", headers=operator)).json()["letters"][0]["id"] \
            == first["id"]

        dry = await api.post("/v1/dlq/replay", json={"ids": [first["id"]], "dry_run": True}, headers=operator)
        assert dry.status_code == 200 and dry.json()["outcomes"][0]["outcome"] == "dry_run"
        done = await api.post("/v1/dlq/replay", json={"ids": [first["id"]]}, headers=operator)
        assert done.status_code == 200, done.text
        o = done.json()["outcomes"][0]
        assert (o["outcome"], o["topic"], o["replays"]) == ("replayed", topics.tasks, 1)
        refused = await api.post("/v1/dlq/replay", json={"ids": [first["id"]]}, headers=operator)
        assert refused.status_code == 409 and "AIOS_DLQ_REPLAY_LIMIT=1" in refused.json()["detail"]
        admin = await key_headers(api, "admin", ("*",))
        to_json = await api.post("/v1/dlq/replay", json={"since_s": 600, "processor": "agents",
                                                         "to": topics.tasks_json}, headers=admin)
        assert to_json.status_code == 200 and to_json.json()["outcomes"][0]["topic"] == topics.tasks_json
        assert (await api.post("/v1/dlq/replay", json={}, headers=operator)).status_code == 422
        both = await api.post("/v1/dlq/replay", json={"ids": [first["id"]], "since_s": 60}, headers=operator)
        assert both.status_code == 422 and "not both" in both.text
        assert (await api.post("/v1/dlq/replay", json={"ids": ["nope"]}, headers=operator)).status_code == 404
        bad_target = await api.post("/v1/dlq/replay", json={"ids": [second["id"]], "to": topics.dlq}, headers=operator)
        assert bad_target.status_code == 400 and "the DLQ itself" in bad_target.json()["detail"]
        assert (await api.post("/v1/dlq/replay", json={"ids": [second["id"]], "to": "a b"},
                               headers=operator)).status_code == 422
        replays = {x["id"]: x["replays"] for x in (await api.get("/v1/dlq", headers=operator)).json()["letters"]}
        assert replays == {first["id"]: 1, second["id"]: 1}


async def test_the_kafka_stream_shares_the_per_key_cap_and_closes_on_revocation(settings: Settings) -> None:
    s = settings.replace(api_kafka_sample_s=0.3, api_ws_per_key=1, api_ws_recheck_s=0.5)
    async with api_client(s) as api:
        headers = await key_headers(api, "viewer", ("*",))
        key = headers["Authorization"].split()[1]
        url = f"ws://127.0.0.1:{api.base_url.port}/v1/kafka/stream?access_token={key}"
        async with connect(url) as first:
            await first.recv()
            with pytest.raises(ConnectionClosed) as over:
                async with connect(url) as second:
                    await second.recv()
            assert over.value.rcvd is not None and over.value.rcvd.code == 4429
            await api.app_state.services.keys.revoke(key.split("_")[1])  # type: ignore[attr-defined]
            with pytest.raises(ConnectionClosed) as revoked:
                while True:
                    await first.recv()
            assert revoked.value.rcvd is not None and revoked.value.rcvd.code == 4401
