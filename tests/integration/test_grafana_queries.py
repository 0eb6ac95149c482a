"""Every Grafana panel's query against live data, as Grafana would send it.

No Grafana server can be installed on these machines (docs/metrics.md says why), so this test does
what Grafana's two datasources would: the Prometheus panels are evaluated by a real Prometheus
(Debian's) that scrapes a running pipeline's /metrics, and the ClickHouse panels are posted to the
ClickHouse HTTP interface of a real server the history sink wrote into. Each must answer, and the
panels this run exercises must have data.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from aios.streams.kafka import EventProducer
from aios.streams.metrics import serve
from aios.streams.pipeline import running
from aios.streams.processors import PROCESSORS
from aios.streams.settings import Settings
from tests.integration.helpers import submit_and_wait
from tests.integration.local_servers import ClickHouseServer, LocalServer, free_port
from tests.unit.test_dashboards import targets

pytestmark = pytest.mark.integration
RATE_INTERVAL = "30s"  # Grafana's $__rate_interval for a 1 s scrape: at least four scrapes
# Panels that this run must fill: everything but what needs an LLM price or a failed result.
PROM_WITH_DATA = {"Tasks/s by role and outcome", "Task duration by role (p50 / p95 / p99)",
                  "Events/s by processor and outcome", "Processing latency p95 by processor",
                  "Consumer lag by group and topic", "Dead letters/s", "LLM tokens/s by model",
                  "LLM spend (USD/hour)", "History sink rows/s", "Sink batch size (mean rows)",
                  "Sink flush p95 and store retries", "Workers up"}
CLICKHOUSE_WITH_DATA = {"Task events per minute by state", "Result latency by role (p50 / p95 / p99, ms)",
                        "Tokens per minute by model", "LLM cost per minute by model (USD)",
                        "Failures per minute (failed results and dead letters)", "Cost by project",
                        "Latest dead letters"}


class Prometheus(LocalServer):
    """Debian's Prometheus, scraping one target every second, with its TSDB in the test's directory."""

    name = "Prometheus"
    ready_path = "/-/ready"

    def __init__(self, directory: Path, target_port: int) -> None:
        super().__init__(directory, free_port())
        config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                  "scrape_configs": [{"job_name": "aios", "static_configs": [
                      {"targets": [f"127.0.0.1:{target_port}"], "labels": {"component": "embedded"}}]}]}
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))

    def command(self) -> tuple[list[str], dict[str, str]]:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is missing: apt-get install prometheus (infra/install-system.sh does)")
        return ([binary, f"--config.file={self.directory / 'prometheus.yml'}",
                 f"--storage.tsdb.path={self.directory / 'tsdb'}", f"--web.listen-address=127.0.0.1:{self.port}"], {})

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        with urllib.request.urlopen(url, timeout=10) as reply:  # noqa: S310 - the test's own server
            doc = json.loads(reply.read())
        assert doc["status"] == "success", doc
        return list(doc["data"]["result"])


def clickhouse(server: ClickHouseServer, sql: str) -> list[dict[str, Any]]:
    """A query over the ClickHouse HTTP interface, as grafana-clickhouse-datasource sends it."""
    request = urllib.request.Request(f"{server.url}/?default_format=JSON", data=sql.encode(),  # noqa: S310
                                     method="POST")
    with urllib.request.urlopen(request, timeout=30) as reply:  # noqa: S310 - the test's own server
        return list(json.loads(reply.read())["data"])


def expand(sql: str) -> str:
    """The datasource's macros over the last hour."""
    sql = re.sub(r"\$__timeFilter\((\w+)\)", r"(\1 >= now() - INTERVAL 1 HOUR AND \1 <= now())", sql)
    assert "$" not in sql, f"unexpanded macro in {sql}"
    return sql


@pytest.fixture
def prometheus(tmp_path: Path) -> Any:
    metrics_port = free_port()
    assert serve(metrics_port)
    server = Prometheus(tmp_path / "prometheus", metrics_port)
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(f"cannot start Prometheus: {exc}")
    yield server
    server.stop()


async def test_every_panel_answers_with_live_data(settings: Settings, prometheus: Prometheus,
                                                  clickhouse_server: ClickHouseServer) -> None:
    s = settings.replace(clickhouse_url=clickhouse_server.url)
    p = s.kafka.topic_prefix
    async with running(s, list(PROCESSORS)):
        for i in range(3):
            assert (await submit_and_wait(s, f"panel data {i}", project=f"{p}-grafana"))["status"] == "succeeded"
        producer = EventProducer(s)
        producer.send_raw(f"{p}.results", b"\x07 not an event", key="junk")  # the sink dead-letters it
        producer.flush()
        for _ in range(120):  # until Prometheus has scraped the dead letter a few times
            seen = await asyncio.to_thread(prometheus.query, f'count_over_time(aios_dead_letters_total{{source_topic="{p}.results"}}[1m])')
            if seen and float(seen[0]["value"][1]) >= 5:
                break
            await asyncio.sleep(0.5)
        else:
            raise AssertionError("Prometheus never scraped the dead letter")

        empty = []
        for name, title, target in targets("prometheus"):
            expr = target["expr"].replace("$__rate_interval", RATE_INTERVAL)
            result = await asyncio.to_thread(prometheus.query, expr)
            if not result:
                empty.append(f"{name}: {title}: {expr}")
        assert not [e for e in empty if e.split(": ")[1] in PROM_WITH_DATA], "\n".join(empty)

    empty = []
    for name, title, target in targets("grafana-clickhouse-datasource"):
        rows = await asyncio.to_thread(clickhouse, clickhouse_server, expand(target["rawSql"]))
        if not rows:
            empty.append(f"{name}: {title}")
    assert not [e for e in empty if e.split(": ")[1] in CLICKHOUSE_WITH_DATA], "\n".join(empty)
