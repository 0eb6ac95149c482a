"""Losing the active controller of a 3-broker KRaft cluster under load (issue 20, section 1): the
same test as test_broker_loss.py, on a cluster of its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.test_broker_loss import cluster, lose_a_broker  # noqa: F401 - the module's own cluster
from tests.integration.kafka_brokers import LocalCluster

pytestmark = pytest.mark.integration


@pytest.mark.timeout(900)
def test_losing_the_active_controller(cluster: LocalCluster, tmp_path: Path) -> None:  # noqa: F811
    lose_a_broker(cluster, tmp_path, cluster.active_controller, "the active controller")
