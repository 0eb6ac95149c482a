"""`aios agents` as a user runs it: live workers as JSON, and a clear error without topics."""

from __future__ import annotations

import time

from tests.e2e.conftest import Cli


def test_agents_lists_a_running_worker_then_not_after_it_stopped(cli: Cli) -> None:
    cli.run("topics", "create")
    assert cli.json("agents") == {"agents": []}
    worker = cli.start("worker", "agents", "--role", "general")
    try:
        deadline = time.monotonic() + 90
        listed: list[dict[str, object]] = []
        while not listed and time.monotonic() < deadline:
            listed = [a for a in cli.json("agents")["agents"] if a["state"] in ("ready", "busy")]
        assert listed and listed[0]["roles"] == ["general"] and listed[0]["stale"] is False
    finally:
        worker.terminate()
        _, err = worker.communicate(timeout=60)
    after = cli.json("agents")
    assert after == {"agents": []}, (after, err[-3000:])
    # It said `stopped`, then tombstoned its key: even --all no longer lists it.
    assert cli.json("agents", "--all") == {"agents": []}
    tail = cli.json("tail", "agents", "--from-beginning", "--timeout", "3")["events"]
    assert [e.get("event", {}).get("state", e["type"]) for e in tail][-2:] == ["stopped", "tombstone"]


def test_agents_without_topics_says_how_to_create_them(cli: Cli) -> None:
    proc = cli.run("agents", check=False)
    assert proc.returncode != 0 and "aios topics create" in proc.stderr


def test_a_worker_that_cannot_start_says_failed(cli: Cli) -> None:
    cli.env["AIOS_ROLES"] = "general"
    cli.run("topics", "create")  # no topic for the qa role: the worker cannot get partitions
    cli.env["AIOS_HEARTBEAT_INTERVAL_S"] = "0.5"
    cli.env["AIOS_ASSIGN_TIMEOUT_S"] = "8"  # the default waits a minute
    proc = cli.run("worker", "agents", "--role", "qa", check=False, timeout=180)
    assert proc.returncode != 0 and "no partitions assigned within 8s" in proc.stderr
    (failed,) = cli.json("agents", "--all")["agents"]
    assert failed["state"] == "failed" and failed["roles"] == ["qa"]
