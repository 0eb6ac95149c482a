"""/metrics of a running pipeline: the issue's series are there and promtool accepts the scrape."""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
import urllib.request

import pytest

from aios.streams.kafka import EventProducer
from aios.streams.lag import ConsumerLag
from aios.streams.metrics import serve
from aios.streams.pipeline import running
from aios.streams.processors import PROCESSORS
from aios.streams.settings import Settings
from tests.integration.helpers import submit_and_wait

pytestmark = pytest.mark.integration


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: apt-get install prometheus (infra/install-system.sh does)"
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:  # noqa: S310
        return str(response.read().decode())


def value(text: str, name: str, **labels: str) -> float | None:
    """The sample ``name`` whose labels include ``labels`` (any order), or None."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_a_real_scrape_covers_the_pipeline_and_passes_promtool(settings: Settings) -> None:
    port = free_port()
    assert serve(port)
    p = settings.kafka.topic_prefix
    async with running(settings, list(PROCESSORS)):
        result = await submit_and_wait(settings, "Explain consumer lag")
        assert result["status"] == "succeeded"
        producer = EventProducer(settings)
        producer.send_raw(f"{p}.results", b"\x07 not an event", key="junk")  # the sink owns results
        producer.flush()

        async def sink_caught_up() -> str:
            for _ in range(200):
                text = await asyncio.to_thread(scrape, port)
                if value(text, "aios_dead_letters_total", processor="history", source_topic=f"{p}.results"):
                    return text
                await asyncio.sleep(0.1)
            raise AssertionError("the history sink never dead-lettered the garbage record")

        text = await sink_caught_up()

    check = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True, text=True,
                           timeout=30)
    assert check.returncode == 0, f"promtool check metrics:\n{check.stdout}{check.stderr}"

    assert (value(text, "aios_tasks_processed_total", role="general", outcome="succeeded") or 0) >= 1
    assert (value(text, "aios_task_duration_seconds_count", role="general") or 0) >= 1
    assert (value(text, "aios_processing_seconds_count", processor="orchestrator") or 0) >= 1
    assert value(text, "aios_llm_tokens_total", provider="offline", direction="output")
    assert value(text, "aios_llm_cost_usd_total", provider="offline") is not None
    # OpenTelemetry's GenAI client metrics, under Prometheus' translation of their names.
    genai = {"gen_ai_operation_name": "chat", "gen_ai_provider_name": "offline", "gen_ai_request_model": "echo"}
    assert (value(text, "gen_ai_client_token_usage_count", **genai, gen_ai_token_type="input") or 0) >= 1
    assert (value(text, "gen_ai_client_token_usage_sum", **genai, gen_ai_token_type="output") or 0) >= 1
    assert (value(text, "gen_ai_client_operation_duration_seconds_count", **genai) or 0) >= 1
    assert (value(text, "aios_sink_batch_rows_count") or 0) >= 1
    # Every LLM call goes through the router's limits, and its wait is observed (0 here: no limits).
    assert (value(text, "aios_router_queue_seconds_count", deployment="offline:echo") or 0) >= 1
    assert value(text, "aios_router_in_flight", deployment="offline:echo") == 0
    assert (value(text, "aios_sink_flush_seconds_count", engine="chdb") or 0) >= 1
    # Lag of the embedded processes' consumer groups (the agents', the orchestrator's and the sink's),
    # on every partition of what they read.
    for group, topic in ((f"{p}-agents", f"{p}.agent.general"), (f"{p}-orchestrator", f"{p}.tasks"),
                         (f"{p}-history", f"{p}.results")):
        for partition in range(settings.kafka.topic_partitions):
            lag = value(text, "aios_consumer_lag_messages", group=group, topic=topic, partition=str(partition))
            assert lag is not None and lag >= 0, f"no lag for {group} {topic}[{partition}]"


def test_lag_counts_what_a_group_has_not_committed(settings: Settings) -> None:
    p = settings.kafka.topic_prefix
    producer = EventProducer(settings)
    for i in range(5):
        producer.send_raw(f"{p}.dlq", b"x", key=f"k{i}")
    producer.flush()
    collector = ConsumerLag(settings.kafka.bootstrap, lambda: {f"{p}-nobody": [f"{p}.dlq", f"{p}.missing"]})
    rows = collector.read()
    # The group never committed: all five records are lag; the missing topic is left out.
    assert {r.topic for r in rows} == {f"{p}.dlq"}
    assert len(rows) == settings.kafka.topic_partitions
    assert sum(r.lag for r in rows) == 5
    assert all(r.committed == -1 for r in rows)
