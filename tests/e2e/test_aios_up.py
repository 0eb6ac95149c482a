"""`aios up` as a user runs it: one supervisor in one terminal, and from another, every command the
README shows (and the ones this issue adds) while it runs; `aios top` under tmux; a crashed
process restarted; SIGTERM with a dashboard WebSocket open stops it all within the drain timeout.

One `aios up` serves the whole module (starting one takes ~15 s on a busy 2-core machine); the
tests run in file order and the last one stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from aios.agents.roles import load_roles
from aios.devstack.logfile import log_path
from aios.devstack.logfile import read as read_log
from aios.devstack.supervisor import free_port
from aios.streams.kafka import EventProducer
from aios.streams.settings import Settings
from aios.streams.topics import delete_topics
from tests.e2e.conftest import AIOS, Cli, free_ports

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
DRAIN_TIMEOUT_S = 20.0


@dataclass
class Up:
    cli: Cli
    proc: subprocess.Popen[str]
    settings: Settings
    lines: list[str] = field(default_factory=list)

    def port(self, name: str) -> int:
        return int(self.cli.env[name])

    def get(self, path: str, port_var: str = "AIOS_API_PORT", headers: dict[str, str] | None = None) -> Any:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port(port_var)}{path}", headers=headers or {})
        with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310 - our loopback server
            body = reply.read().decode()
        return json.loads(body) if body.startswith(("{", "[")) else body


def eventually(check: Callable[[], Any], timeout_s: float = 60.0, every_s: float = 1.0) -> Any:
    """The first truthy answer of ``check`` within ``timeout_s`` (the last AssertionError otherwise)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            answer = check()
            if answer:
                return answer
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout_s:.0f} s: {check}")
        time.sleep(every_s)


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory, base_settings: Settings) -> Iterator[Up]:
    data = tmp_path_factory.mktemp("aios-up")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIOS_", "OPENAI_"))}
    env.update({
        "AIOS_TOPIC_PREFIX": f"up{uuid.uuid4().hex[:10]}", "AIOS_DATA_DIR": str(data / "data"),
        "AIOS_KAFKA_BOOTSTRAP": base_settings.kafka.bootstrap, "AIOS_REDIS_URL": base_settings.stores.redis_url,
        "AIOS_LLM": "offline:echo", "AIOS_VECTOR_MEMORY": "1", "AIOS_HEARTBEAT_INTERVAL_S": "1",
        "AIOS_DRAIN_TIMEOUT_S": str(DRAIN_TIMEOUT_S), "AIOS_METRICS_PORT": str(free_port()), **free_ports(),
    })
    cli = Cli(env)
    cli.run("topics", "create")
    settings = base_settings.replace(topic_prefix=env["AIOS_TOPIC_PREFIX"], roles=",".join(load_roles().names()))
    proc = subprocess.Popen([*AIOS, "up", "--no-stack"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)
    stack = Up(cli, proc, settings)
    assert proc.stderr is not None
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        stack.lines.append(line)
        if "aios: ready" in line or (not line and proc.poll() is not None):
            break
    assert "aios: ready" in stack.lines[-1], "aios up did not get ready:\n" + "".join(stack.lines[-40:])
    # Keep reading what it prints to the terminal, as a terminal would: a full pipe would block it.
    drain = threading.Thread(target=lambda: stack.lines.extend(proc.stderr or ()), daemon=True)
    drain.start()
    try:
        yield stack
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        drain.join(timeout=10)
        proc.stderr.close()
        delete_topics(settings)


@pytest.fixture(scope="module")
def submitted(up: Up) -> dict[str, Any]:
    """What the README's submit commands produced, for the tests that read it back."""
    cli = up.cli
    task = cli.json("submit", "Write a haiku about queues", "--wait", "--stream", "--timeout", "90")
    plan = cli.json("submit", "--plan", str(ROOT / "docs/examples/plan.json"), "--wait", "--timeout", "90")
    # The goal needs the planner role: `aios up` serves every role, and the CLI checks the live agents.
    goal = cli.json("submit", "--goal", "Build a URL shortener", "--project", "shortener-goal", "--wait",
                    "--timeout", "120")
    return {"task": task, "plan": plan, "goal": goal}


def test_submit_a_task_a_plan_and_a_goal_then_read_them_back(up: Up, submitted: dict[str, Any]) -> None:
    cli = up.cli
    assert submitted["task"]["result"]["status"] == "succeeded"
    assert submitted["plan"]["status"]["state"] == "succeeded"
    goal = submitted["goal"]["status"]
    assert goal["state"] == "succeeded" and goal["counts"]["succeeded"] >= 2
    projects = {p["project_id"]: p for p in cli.json("status")["projects"]}
    assert {"default", submitted["plan"]["project"], "shortener-goal"} <= set(projects)
    assert cli.json("status", "shortener-goal")["percent_done"] == 100.0
    # A plan starts its project once: again, it is refused before anything is produced, and
    # --wait does not report the first run's status as its own.
    again = cli.run("submit", "--plan", str(ROOT / "docs/examples/plan.json"), "--wait", check=False)
    assert again.returncode == 1 and "already exists (succeeded)" in again.stderr, again.stderr
    assert 'give the plan another "project"' in again.stderr
    tail = cli.json("tail", "results", "--from-beginning", "--limit", "5", "--timeout", "10")
    assert tail["count"] == 5 and {e["type"] for e in tail["events"]} == {"TaskResult"}
    (agent,) = cli.json("agents")["agents"]
    assert agent["state"] in ("ready", "busy") and set(agent["roles"]) == set(load_roles().names())


def test_history_through_the_clickhouse_owner(up: Up, submitted: dict[str, Any]) -> None:
    cli = up.cli

    # chdb belongs to `aios up`'s clickhouse process; the CLI goes through the address it serves.
    def stats_with_results() -> dict[str, Any] | None:
        doc: dict[str, Any] = cli.json("stats", "--since", "1h")
        return doc if doc["results"] >= 6 else None

    stats = eventually(stats_with_results)
    assert stats["engine"] == "clickhouse-server" and stats["success_rate"] == 1.0
    assert cli.json("db", "migrate")["applied"] == []
    # The same address answers a ClickHouse client over HTTP, as any tool would use it.
    sql = urllib.parse.quote("SELECT count() FROM aios.events WHERE event_type = 'TaskResult'")
    assert int(up.get(f"/?query={sql}", "AIOS_CLICKHOUSE_HTTP_PORT")) >= 6
    # The API of `aios up` reads the same store: /v1/stats through the ClickHouse owner.
    key = cli.json("keys", "create", "--role", "viewer", "--project", "*")["key"]
    api_stats = up.get("/v1/stats?since_s=3600", headers={"Authorization": f"Bearer {key}"})
    assert api_stats["engine"] == "clickhouse-server" and api_stats["results"] >= 6


def test_vector_memory_through_the_qdrant_owner(up: Up, submitted: dict[str, Any]) -> None:
    # The local Qdrant folder belongs to `aios up`'s qdrant process; the memory processor, the
    # agents' recall and this command all reach it through Qdrant's REST API.
    cli = up.cli
    hits = eventually(lambda: cli.json("memory", "search", "haiku about queues", "--project", "default")["hits"])
    assert "haiku" in hits[0]["text"].lower()
    window = cli.json("memory", "show", "project", "default")
    assert window["turns"] and window["turns"][0]["task_id"] == submitted["task"]["task_id"]


def test_logs_and_a_top_snapshot(up: Up, submitted: dict[str, Any]) -> None:
    cli = up.cli
    task_id = submitted["task"]["task_id"]
    lines = cli.json("logs", "--task", task_id)["lines"]
    assert any(line["process"] == "agents" and "succeeded" in line["message"] for line in lines), lines
    assert all(line["task_id"] == task_id and line["time"] and line["level"] for line in lines)
    supervisor = cli.json("logs", "--processor", "supervisor")["lines"]
    assert any("ready with" in line["message"] for line in supervisor)
    # --follow prints what comes: here, the agent's line about a task submitted meanwhile.
    follow = subprocess.Popen([*AIOS, "logs", "--follow", "--processor", "agents", "--lines", "0"], env=cli.env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        time.sleep(3)  # the command is reading the file's end
        later = cli.json("submit", "Followed", "--wait", "--timeout", "90")["task_id"]
        assert follow.stdout is not None
        line = eventually(lambda: (text := follow.stdout.readline()) and later[:8] in text and text, timeout_s=30,
                          every_s=0)
        assert " agents[" in line and "succeeded" in line  # the text form: one line per event
    finally:
        follow.terminate()
        follow.wait(10)
        if follow.stdout is not None:
            follow.stdout.close()
    snapshot = cli.json("top", "--refresh", "0.5")
    assert [a["state"] for a in snapshot["agents"]] in (["ready"], ["busy"])
    assert {p["project_id"] for p in snapshot["projects"]} >= {"default", "shortener-goal"}
    assert {"orchestrator", "results", "history", "memory"} <= set(snapshot["lag"])


def test_a_role_no_live_agent_serves_is_refused_by_the_cli_and_reported_by_the_api(up: Up) -> None:
    # A second deployment's prefix, where no agent runs: the check is against the live agents.
    empty = Cli({**up.cli.env, "AIOS_TOPIC_PREFIX": f"none{uuid.uuid4().hex[:8]}"})
    empty.run("topics", "create")
    try:
        proc = empty.run("submit", "--goal", "Build a shop", "--project", "shop", check=False)
        assert proc.returncode == 1
        assert "no live agent serves 'planner'" in proc.stderr and "aios up" in proc.stderr
        assert empty.json("submit", "--goal", "Build a shop", "--project", "shop", "--anyway")["project"] == "shop"
        unknown = empty.run("submit", "do it", "--role", "astronaut", check=False)
        assert unknown.returncode == 1 and "unknown role 'astronaut'" in unknown.stderr
    finally:
        delete_topics(up.settings.replace(topic_prefix=empty.env["AIOS_TOPIC_PREFIX"]))


def test_top_under_tmux_shows_what_runs(up: Up, tmp_path: Path) -> None:
    assert shutil.which("tmux"), "tmux is missing: bash infra/install-system.sh installs it"
    session = f"aios-top-{uuid.uuid4().hex[:6]}"
    script = tmp_path / "top.sh"
    exports = "".join(f"export {k}={json.dumps(v)}\n" for k, v in up.cli.env.items() if k.startswith("AIOS_"))
    # COLUMNS and LINES (pytest's terminal) would override the pane's size for textual.
    script.write_text(f"{exports}unset COLUMNS LINES\ncd {ROOT}\nexec {sys.executable} -m aios.cli top --refresh 0.5\n")
    socket = str(tmp_path / "tmux.sock")  # a server of its own: other tmux users are left alone
    tmux = ["tmux", "-S", socket]
    subprocess.run([*tmux, "new-session", "-d", "-s", session, "-x", "180", "-y", "60", f"bash {script}"], check=True)
    try:
        # Garbage on the tasks topic: the orchestrator dead-letters it, and top lists it.
        producer = EventProducer(up.settings)
        producer.send_raw(up.settings.kafka.topic_prefix + ".tasks", b"not an event", key="top-project")
        producer.flush()
        plan = {"project": "top-project", "tasks": [
            {"id": f"t{i}", "role": "writer" if i % 2 else "qa", "description": f"step {i}"} for i in range(6)]}
        plan_file = tmp_path / "plan.json"
        plan_file.write_text(json.dumps(plan))
        up.cli.json("submit", "--plan", str(plan_file), "--wait", "--timeout", "90")

        def shows_everything() -> str:
            pane = subprocess.run([*tmux, "capture-pane", "-t", session, "-p"], capture_output=True, text=True,
                                  check=True).stdout
            assert "role: all" in pane and "live" in pane, pane
            # Tasks per role: rows of the roles table, which start with the role (the agents' row
            # names them too, but top cycles through the roles table's when it has rows).
            assert {"writer", "qa"} <= {line.split()[0] for line in pane.splitlines() if line.split()}, pane
            assert "top-project" in pane and "100%" in pane, pane  # the project, done
            assert "orchestrator" in pane and "history" in pane, pane  # consumer lag per group
            assert "UndecodableError" in pane or "undecodable" in pane.lower(), pane  # the dead letter
            assert "ready" in pane or "busy" in pane, pane  # the agent
            return pane

        eventually(shows_everything, timeout_s=60)
        subprocess.run([*tmux, "send-keys", "-t", session, "r"], check=True)

        def role_filtered() -> str:
            pane = subprocess.run([*tmux, "capture-pane", "-t", session, "-p"], capture_output=True, text=True,
                                  check=True).stdout
            assert "role: qa" in pane, pane  # roles cycle in name order: qa before writer
            return pane

        eventually(role_filtered, timeout_s=15, every_s=0.5)
        subprocess.run([*tmux, "send-keys", "-t", session, "q"], check=True)
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True, check=False)


def _started_pid(up: Up, process: str) -> int:
    lines = read_log(log_path(up.settings.replace(data_dir=up.cli.env["AIOS_DATA_DIR"])), processor="supervisor")
    started = [line["message"] for line in lines if line["message"].startswith(f"supervisor: started {process} (pid ")]
    return int(started[-1].split("(pid ")[1].split(")")[0])


def test_a_crashed_process_is_restarted_logged_and_counted(up: Up) -> None:
    pid = _started_pid(up, "orchestrator")
    os.kill(pid, signal.SIGKILL)
    eventually(lambda: _started_pid(up, "orchestrator") != pid, timeout_s=30, every_s=0.5)
    errors = up.cli.json("logs", "--processor", "supervisor")["lines"]
    assert any(line["level"] == "ERROR" and f"orchestrator (pid {pid}) exited" in line["message"] for line in errors)
    metrics = up.get("/metrics", "AIOS_METRICS_PORT")
    assert 'aios_process_restarts_total{process="orchestrator"} 1.0' in metrics
    assert 'aios_process_up{process="orchestrator"} 1.0' in metrics
    # The children's own metrics, each labelled with its process, on the supervisor's one /metrics.
    assert 'aios_events_processed_total{outcome="succeeded",process="agents",processor="agents"}' in metrics
    # The restarted orchestrator fences its predecessor's transactions and goes on.
    task = up.cli.json("submit", "After the crash", "--wait", "--timeout", "90")
    assert task["result"]["status"] == "succeeded"


def test_sigterm_with_a_websocket_open_stops_everything_within_the_drain_timeout(up: Up) -> None:
    key = up.cli.json("keys", "create", "--role", "viewer", "--project", "*")["key"]
    children = [_started_pid(up, name) for name in ("orchestrator", "agents", "api", "clickhouse", "qdrant")]

    async def session_then_sigterm() -> float:
        url = f"ws://127.0.0.1:{up.port('AIOS_API_PORT')}/v1/stream?access_token={key}&types=agents"
        async with connect(url) as ws:
            await asyncio.wait_for(ws.recv(), timeout=30)  # the dashboard's session is live
            started = time.monotonic()
            up.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(Exception):  # the server closes it (or cuts it) while stopping
                while True:
                    await asyncio.wait_for(ws.recv(), timeout=DRAIN_TIMEOUT_S)
            await asyncio.to_thread(up.proc.wait, DRAIN_TIMEOUT_S + 10)
            return time.monotonic() - started

    elapsed = asyncio.run(session_then_sigterm())
    assert up.proc.returncode == 0
    assert elapsed < DRAIN_TIMEOUT_S, f"aios up took {elapsed:.1f} s to stop"
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    # Every process stopped by itself (the WebSocket session did not hold the API, no thread held
    # a worker): none had to be killed at the deadline.
    stopping = up.cli.json("logs", "--processor", "supervisor", "--lines", "100")["lines"]
    assert not [line for line in stopping if "did not stop in time" in line["message"]]
    assert stopping[-1]["message"] == "supervisor: stopped"
    # The agent drained, said `stopped`, and tombstoned its key: `aios agents` lists nobody.
    assert up.cli.json("agents", "--all")["agents"] == []
