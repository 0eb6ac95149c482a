"""One /metrics for `aios up`: the supervisor's and each child's families merged, labelled by process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from aios.devstack.metrics_merge import Merged, merge
from aios.streams.metrics import METRICS_SCRAPE_FAILURES

CHILD = """# HELP aios_events_processed_total Events.
# TYPE aios_events_processed_total counter
aios_events_processed_total{processor="agents",outcome="succeeded"} 3.0
"""


def test_families_merge_by_name_and_every_sample_names_its_process() -> None:
    other = CHILD.replace("agents", "orchestrator").replace("3.0", "5.0")
    merged = merge([("agents", text_string_to_metric_families(CHILD)),
                    ("orchestrator", text_string_to_metric_families(other))])
    (family,) = merged
    assert [(s.labels["process"], s.value) for s in family.samples] == [("agents", 3.0), ("orchestrator", 5.0)]


def test_a_sample_that_names_a_process_keeps_it() -> None:
    registry = CollectorRegistry()
    Counter("aios_process_restarts", "r", ["process"], registry=registry).labels("memory").inc()
    (family,) = [f for f in merge([("supervisor", registry.collect())]) if f.name == "aios_process_restarts"]
    assert {s.labels["process"] for s in family.samples} == {"memory"}


def test_a_child_that_does_not_answer_is_left_out_and_counted() -> None:
    own = CollectorRegistry()
    collector = Merged(lambda: {"gone": 1}, own=own)  # nothing listens on port 1
    before = METRICS_SCRAPE_FAILURES.labels("gone")._value.get()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    assert generate_latest(registry) == b""
    assert METRICS_SCRAPE_FAILURES.labels("gone")._value.get() == before + 1
    collector.close()
