"""The consumer-lag collector when the broker does not answer: a scrape still succeeds."""

from __future__ import annotations

import socket

from aios.streams.lag import ConsumerLag
from aios.streams.metrics import LAG_ERRORS


def test_an_unreachable_broker_leaves_lag_out_and_counts_the_miss() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    collector = ConsumerLag(f"127.0.0.1:{port}", lambda: {"g": ["t"]}, timeout_s=1.0)
    before = LAG_ERRORS._value.get()
    families = list(collector.collect())
    assert [f.name for f in families] == ["aios_consumer_lag_messages", "aios_consumer_committed_offset"]
    assert all(not f.samples for f in families)
    assert LAG_ERRORS._value.get() == before + 1
    # Cached: a second scrape within refresh_s does not ask the broker again.
    list(collector.collect())
    assert LAG_ERRORS._value.get() == before + 1


def test_no_groups_means_no_broker_call() -> None:
    collector = ConsumerLag("127.0.0.1:1", lambda: {"g": []})
    assert collector.read() == []
