"""infra/grafana/ dashboards and infra/prometheus/ alerts refer only to things that exist.

Prometheus panels and alert rules may only name metrics AIOS processes export, and their PromQL
must parse (promtool checks it as a rule file). ClickHouse panels run, macros expanded, against
chdb with every migration applied, so a renamed table or column fails here, not on a dashboard.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import aios.streams.metrics  # noqa: F401 - registers the AIOS metrics
from aios.streams.lag import COMMITTED_METRIC, LAG_METRIC

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "infra" / "grafana" / "provisioning" / "dashboards"
ALERTS = ROOT / "infra" / "prometheus" / "alerts.yml"
DATASOURCES = ROOT / "infra" / "grafana" / "provisioning" / "datasources" / "datasources.yml"
METRIC = re.compile(r"\b(aios_[a-z0-9_]+)")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def exported() -> set[str]:
    """Every sample name AIOS exports: the registry's metrics and the consumer-lag collector's."""
    names = {LAG_METRIC, COMMITTED_METRIC}
    for family in REGISTRY.collect():
        for suffix in SUFFIXES.get(family.type, ("",)):
            names.add(family.name + suffix)
    return {n for n in names if n.startswith("aios_")}


def dashboards() -> dict[str, dict[str, Any]]:
    found = {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}
    assert found, f"no dashboards in {DASHBOARDS}"
    return found


def targets(kind: str) -> list[tuple[str, str, dict[str, Any]]]:
    out = []
    for name, dash in dashboards().items():
        for panel in dash["panels"]:
            for target in panel["targets"]:
                if target["datasource"]["type"] == kind:
                    out.append((name, panel["title"], target))
    return out


def test_dashboards_are_well_formed_and_use_provisioned_datasources() -> None:
    sources = {d["uid"]: d["type"] for d in yaml.safe_load(DATASOURCES.read_text())["datasources"]}
    uids = set()
    for name, dash in dashboards().items():
        assert dash["uid"] not in uids, f"{name}: duplicate uid {dash['uid']}"
        uids.add(dash["uid"])
        ids = [p["id"] for p in dash["panels"]]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        for panel in dash["panels"]:
            assert panel["targets"], f"{name}: panel {panel['title']!r} has no query"
            for ds in [panel["datasource"], *(t["datasource"] for t in panel["targets"])]:
                assert sources.get(ds["uid"]) == ds["type"], f"{name}: {panel['title']!r} uses unknown {ds}"


def test_prometheus_panels_and_alerts_name_exported_metrics() -> None:
    have = exported()
    exprs = [(f"{n}: {title}", t["expr"]) for n, title, t in targets("prometheus")]
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        exprs += [(f"alerts.yml: {r['alert']}", r["expr"]) for r in group["rules"]]
    used = set()
    for where, expr in exprs:
        for name in METRIC.findall(expr):
            assert name in have, f"{where} uses {name}, which no AIOS process exports"
            used.add(name)
    # The dashboards cover the list: tasks, latency, LLM, lag, DLQ and the sink.
    for needed in ("aios_tasks_processed_total", "aios_task_duration_seconds_bucket", "aios_llm_tokens_total",
                   "aios_llm_cost_usd_total", LAG_METRIC, "aios_dead_letters_total", "aios_sink_batch_rows_sum",
                   "aios_sink_flush_seconds_bucket"):
        assert needed in used, f"no panel or alert shows {needed}"


def test_prometheus_panel_queries_parse(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install prometheus (infra/install-system.sh does)"
    # Grafana's own variables are not PromQL; give them the values Grafana would.
    rules = [{"record": f"aios:panel_{i}", "expr": t["expr"].replace("$__rate_interval", "1m")}
             for i, (_, _, t) in enumerate(targets("prometheus"))]
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    run = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def _expand(sql: str) -> str:
    """The grafana-clickhouse-datasource macros, as the plugin expands them, over the last day."""
    sql = re.sub(r"\$__timeFilter\((\w+)\)", r"(\1 >= now() - INTERVAL 1 DAY AND \1 <= now())", sql)
    assert "$" not in sql, f"unexpanded macro in {sql}"
    return sql


@pytest.fixture(scope="module")
def store(session_data_dir: Path) -> Any:
    from aios.connectors.history.chdb_store import ChdbStore

    return ChdbStore.open(session_data_dir / "chdb")  # migrations applied


def test_clickhouse_panels_run_against_the_migrated_schema(store: Any) -> None:
    from aios.connectors.errors import StoreQueryError

    panels = targets("grafana-clickhouse-datasource")
    assert panels, "no ClickHouse panel"
    for name, title, target in panels:
        try:
            store.query(_expand(target["rawSql"]))
        except StoreQueryError as exc:
            raise AssertionError(f"{name}: {title!r} does not run: {exc}") from exc


def test_a_panel_on_a_missing_table_is_caught(store: Any) -> None:
    from aios.connectors.errors import StoreQueryError

    with pytest.raises(StoreQueryError):
        store.query(_expand("SELECT count() FROM aios.no_such_table WHERE $__timeFilter(ts)"))
