"""`aios bench router` in miniature: every path and the limiter are timed beside their baselines."""

from __future__ import annotations

import json

from click.testing import CliRunner

from aios.cli import cli


def test_the_router_bench_reports_the_limiter_beside_the_raw_sdk() -> None:
    out = CliRunner().invoke(cli, ["bench", "router", "--decisions", "100", "--calls", "10", "--concurrency", "5",
                                   "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output.strip().splitlines()[-1])
    assert set(doc["limiter"]) == {"admissions", "limited", "baseline_no_limits"}
    calls = doc["calls"]
    for mode in ("sequential", "concurrent"):
        assert set(calls[mode]) == {"raw_sdk", "provider", "router", "router_limited"}
        assert all(path["calls_per_s"] > 0 and path["p50_us"] > 0 for path in calls[mode].values())
    assert "limits_over_router_p50_us" in calls and calls["concurrency"] == 5


def test_a_bad_size_is_refused() -> None:
    out = CliRunner().invoke(cli, ["bench", "router", "--concurrency", "0"])
    assert out.exit_code == 2 and "--concurrency ≥ 1" in out.output
