"""``aios drain`` and ``aios reload`` on live agent worker processes: the named worker finishes the
assignment it holds, says ``stopped`` and exits 0 while the other goes on; the other reloads its LLM
config when told; ``--all`` then drains the rest."""

from __future__ import annotations

import socket
import time

import pytest

from aios.agents.llm.servers.openai import FakeOpenAI, ok, slow_first_token
from aios.streams.readmodels.task_client import TaskClient, build_task
from tests.e2e.conftest import Cli
from tests.e2e.test_ask_agent_kill import wait_for
from tests.e2e.test_crash_safety import Worker, read_all, settings_of

pytestmark = pytest.mark.integration


def agent_id(p: Worker) -> str:
    assert p.proc is not None
    return f"{socket.gethostname()}-{p.proc.pid}"


def exit_code(p: Worker, timeout_s: float) -> int | None:
    assert p.proc is not None
    deadline = time.monotonic() + timeout_s
    while p.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    return p.proc.poll()


@pytest.mark.timeout(600)
def test_drain_one_worker_reload_the_other_then_drain_all(cli: Cli) -> None:
    with FakeOpenAI() as llm:
        cli.env.update({"AIOS_LLM": "openai:gpt-4o-mini", "AIOS_OPENAI_API_KEY": "sk-test",
                        "AIOS_OPENAI_BASE_URL": llm.base_url, "AIOS_LLM_MAX_RETRIES": "0"})
        cli.run("topics", "create")
        llm.script(slow_first_token(4.0, "finished while draining"))
        first, second = (Worker(Cli({**cli.env, "AIOS_INSTANCE": name}), "agents") for name in ("first", "second"))
        processes = [Worker(cli, "orchestrator"), Worker(cli, "results"), first]
        try:
            for p in processes:
                p.start()
            client = TaskClient(settings_of(cli))
            task = build_task("A slow one", project="drain")
            client.submit(task)
            wait_for(lambda: llm.requests, 120, "the slow call")  # the first worker holds the assignment
            second.start()  # joins the group now: every partition was the first's when the task came
            drained = cli.json("drain", agent_id(first), "--reason", "deploy")
            assert drained["action"] == "drain" and drained["target"] == agent_id(first)
            assert exit_code(first, 90) == 0, "".join(first.log[-20:])
            results = read_all(cli, "results")
            assert [(r["task_id"], r["output"]) for r in results] == [(task["task_id"], "finished while draining")]
            statuses = [s for s in read_all(cli, "agents") if s["agent_id"] == agent_id(first)]
            assert [s["state"] for s in statuses][-2:] == ["draining", "stopped"]
            assert second.proc is not None and second.proc.poll() is None  # not its name: it goes on
            llm.script(ok("served by the second"))
            later = build_task("After the drain", project="drain")
            client.submit(later)
            wait_for(lambda: any(r["task_id"] == later["task_id"] for r in read_all(cli, "results")), 120,
                     "the second worker's result")
            client.close()
            reloaded = cli.json("reload", "llm")
            assert (reloaded["action"], reloaded["target"]) == ("reload", "llm")
            wait_for(lambda: any("llm reloaded on request of cli" in line for line in second.log), 60,
                     "the reload on the live worker")
            assert cli.run("reload", "everything", check=False).returncode != 0
            cli.run("drain", "--all")
            assert exit_code(second, 90) == 0, "".join(second.log[-20:])
            usage = cli.run("drain", check=False)
            assert usage.returncode != 0 and "or pass --all" in usage.stderr
        finally:
            for p in [second, *processes]:
                p.stop()
