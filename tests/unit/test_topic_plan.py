"""The topic plan's replication: taken from the cluster unless the settings say, and refused when
it cannot work."""

from __future__ import annotations

import pytest

from aios.schemas.errors import ConfigError
from aios.streams.settings import load_settings
from aios.streams.topics import replication_for, topic_specs


@pytest.mark.parametrize(("brokers", "factor", "min_insync"), [(1, 1, 1), (2, 2, 1), (3, 3, 2), (5, 3, 2)])
def test_replication_follows_the_cluster(brokers: int, factor: int, min_insync: int) -> None:
    plan = replication_for(load_settings(), brokers)
    assert (plan.brokers, plan.factor, plan.min_insync, plan.source) == (brokers, factor, min_insync, "cluster")


def test_every_topic_gets_the_plans_copies_and_min_isr() -> None:
    settings = load_settings()
    specs = topic_specs(settings, replication_for(settings, 3))
    assert {(s.replication, s.config["min.insync.replicas"]) for s in specs} == {(3, "2")}
    # The DLQ keeps its own retention beside the shared min ISR.
    dlq = next(s for s in specs if s.name.endswith(".dlq"))
    assert dlq.config["retention.ms"] == str(settings.kafka.topic_retention_ms * 4)


def test_settings_win_over_the_cluster() -> None:
    plan = replication_for(load_settings(topic_replication=2, topic_min_insync_replicas=2), 3)
    assert (plan.factor, plan.min_insync, plan.source) == (2, 2, "settings")
    # Only the min ISR set: the copies still follow the cluster.
    plan = replication_for(load_settings(topic_min_insync_replicas=3), 3)
    assert (plan.factor, plan.min_insync) == (3, 3)


def test_more_copies_than_brokers_names_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"AIOS_TOPIC_REPLICATION=3 but the cluster .* has 1 broker up"):
        replication_for(load_settings(topic_replication=3), 1)


def test_a_min_isr_above_the_copies_is_refused() -> None:
    with pytest.raises(ConfigError, match="AIOS_TOPIC_MIN_INSYNC_REPLICAS=3 is more than AIOS_TOPIC_REPLICATION=2"):
        load_settings(topic_replication=2, topic_min_insync_replicas=3)
    # Against the copies the cluster gives (two brokers: two copies).
    with pytest.raises(ConfigError, match=r"AIOS_TOPIC_MIN_INSYNC_REPLICAS=3 is more than the 2 copies"):
        replication_for(load_settings(topic_min_insync_replicas=3), 2)


def test_without_a_cluster_the_plan_assumes_the_settings_or_one_copy() -> None:
    assert {s.replication for s in topic_specs(load_settings())} == {1}
    assert {s.replication for s in topic_specs(load_settings(topic_replication=3))} == {3}
