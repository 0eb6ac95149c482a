"""Topic creation is explicit and idempotent; the plan is what the broker has."""

from __future__ import annotations

import time
from typing import Any

import pytest

from aios.streams.errors import KafkaError
from aios.streams.settings import Settings
from aios.streams.topics import admin_client, create_topics, delete_topics, list_topics, wait_for_leaders

pytestmark = pytest.mark.integration


def test_create_is_idempotent_and_matches_the_plan(settings: Settings) -> None:
    # The fixture already created them once.
    again = create_topics(settings)
    assert {o.outcome for o in again} == {"exists"}
    assert all(o.detail == "" for o in again)
    infos = {i.name: i for i in list_topics(settings)}
    p = settings.kafka.topic_prefix
    assert set(infos) == {f"{p}.tasks", f"{p}.projects", f"{p}.control", f"{p}.agent.general", f"{p}.attempts",
                          f"{p}.finals", f"{p}.results", f"{p}.project-status", f"{p}.messages", f"{p}.memory", f"{p}.llm-calls",
                          f"{p}.agents", f"{p}.dlq", f"{p}.tasks-json", f"{p}.results-json",
                          f"{p}.orchestrator-state", f"{p}.tokens"}
    for compacted in (f"{p}.agents", f"{p}.project-status", f"{p}.orchestrator-state"):
        assert infos[compacted].cleanup_policy == "compact"
    assert infos[f"{p}.tasks"].cleanup_policy == "delete"
    assert infos[f"{p}.tasks"].retention_ms == str(settings.kafka.topic_retention_ms)
    assert infos[f"{p}.tokens"].retention_ms == "3600000"  # live tokens are not history
    assert all(i.partitions == settings.kafka.topic_partitions for i in infos.values())
    assert all(i.replication == 1 for i in infos.values())  # the shared broker is a cluster of one
    assert all(i.min_insync_replicas == "1" for i in infos.values())


def test_topic_prefix_and_roles_are_settings(base_settings: Settings) -> None:
    s = base_settings.replace(topic_prefix="itprefix-roles", roles=("general", "backend"))
    outcomes = create_topics(s)
    names = [o.name for o in outcomes]
    assert "itprefix-roles.agent.backend" in names
    assert all(n.startswith(("itprefix-roles.", "itprefix-roles-")) for n in names)


def test_auto_create_is_off(base_settings: Settings) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": base_settings.kafka.bootstrap, "message.timeout.ms": 3000})
    errors: list[object] = []
    p.produce("it-never-created-topic", b"x", on_delivery=lambda err, msg: errors.append(err))
    p.flush(10)
    assert errors and errors[0] is not None, "the broker auto-created a topic; auto.create must be off"


def test_waiting_for_a_topic_that_never_gets_a_leader_names_it(settings: Settings) -> None:
    admin = admin_client(settings)
    with pytest.raises(KafkaError, match=r"itnever\.tasks.*aios dev status"):
        wait_for_leaders(admin, {"itnever.tasks": 1}, timeout_s=0.5)


def test_created_topics_are_served_at_once_to_a_fresh_client(base_settings: Settings) -> None:
    s = base_settings.replace(topic_prefix=f"itfresh{time.time_ns()}")
    create_topics(s)
    try:
        # A new client, no retry: creation returned only after the broker served every partition.
        assert f"{s.kafka.topic_prefix}.tasks" in {t.name for t in list_topics(s)}
    finally:
        delete_topics(s)


def test_deleted_topics_are_gone_at_once_for_a_fresh_client(base_settings: Settings) -> None:
    s = base_settings.replace(topic_prefix=f"itgone{time.time_ns()}")
    create_topics(s)
    deleted = delete_topics(s)
    assert f"{s.kafka.topic_prefix}.tasks" in deleted
    assert list_topics(s) == []  # a new client: deletion returned only once the broker dropped them


def test_a_topic_deleted_while_listing_is_left_out(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    # The race of the listing with a deletion, made certain: metadata read from before the delete.
    admin = admin_client(settings)
    before = admin.list_topics(timeout=10)
    gone = f"{settings.kafka.topic_prefix}.memory"
    admin.delete_topics([gone], operation_timeout=30)[gone].result(30)
    wait_gone = time.monotonic() + 30
    while gone in admin.list_topics(timeout=10).topics and time.monotonic() < wait_gone:
        time.sleep(0.1)

    class StaleMetadata:
        def __init__(self, real: Any) -> None:
            self.real = real

        def list_topics(self, timeout: float) -> Any:
            return before

        def describe_configs(self, resources: Any, request_timeout: float) -> Any:
            return self.real.describe_configs(resources, request_timeout=request_timeout)

    monkeypatch.setattr("aios.streams.topics.admin_client", lambda s: StaleMetadata(admin_client(s)))
    names = {t.name for t in list_topics(settings)}
    assert gone not in names and f"{settings.kafka.topic_prefix}.tasks" in names
