"""infra/prometheus/: the scrape config, the alert rules and their unit tests pass promtool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "infra" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    path = shutil.which("promtool")
    assert path, "promtool is missing: apt-get install prometheus (infra/install-system.sh does)"
    return subprocess.run([path, *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=60)


def test_scrape_config_is_valid_and_loads_the_rules() -> None:
    run = promtool("check", "config", "prometheus.yml")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 rule files found" in run.stdout


def test_alert_rules_are_valid() -> None:
    run = promtool("check", "rules", "alerts.yml")
    assert run.returncode == 0, run.stdout + run.stderr


def test_alert_rules_fire_as_their_unit_tests_expect() -> None:
    run = promtool("test", "rules", "alerts_test.yml")
    assert run.returncode == 0, run.stdout + run.stderr


def test_a_broken_rule_is_caught(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("groups:\n  - name: x\n    rules:\n      - alert: Broken\n        expr: sum(rate(x[5m]) >\n")
    run = promtool("check", "rules", str(bad))
    assert run.returncode != 0
