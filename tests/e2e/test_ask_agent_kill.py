"""ask_agent across a crash: the asking agent's worker is SIGKILLed while it waits for the answer.
The assignment is redelivered to a new worker, which finds the question in the journal and the
answer on the results topic: nothing is asked again, and the answering role's model is called once.

Four processes (orchestrator, results committer, a worker for the asking role ``general``, one for
the answering role ``writer``) share the OpenAI wire-format server, which counts the calls by the
persona of each request."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from typing import Any

import pytest

from aios.agents.llm.servers.openai import FakeOpenAI, ok, slow_first_token, tool_call
from aios.agents.runner import system_prompt
from aios.agents.tools_ask import ask_depth
from aios.streams.readmodels.task_client import TaskClient, build_task
from tests.e2e.conftest import Cli
from tests.e2e.test_crash_safety import Worker, read_all, settings_of
from tests.integration.local_servers import free_port

pytestmark = pytest.mark.integration

ANSWER = json.dumps({"summary": "the plan", "document": "step one, step two"}, separators=(",", ":"))


def metric(port: int, name: str, **labels: str) -> float:
    """One sample of a worker's /metrics (0 when absent)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()  # noqa: S310 - loopback
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))  # the client writes them sorted
    head = f"{name}{{{want}}}" if want else name
    for line in text.splitlines():
        if line.startswith(head + " "):
            return float(line.split()[-1])
    return 0.0


def wait_for(probe: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout_s:.0f}s")


@pytest.mark.timeout(600)
def test_a_killed_asker_finds_its_answer_and_asks_nothing_again(cli: Cli) -> None:
    with FakeOpenAI() as llm:
        cli.env.update({"AIOS_LLM": "openai:gpt-4o-mini", "AIOS_OPENAI_API_KEY": "sk-test",
                        "AIOS_OPENAI_BASE_URL": llm.base_url, "AIOS_LLM_MAX_RETRIES": "0",
                        "AIOS_ROLES": "general,writer"})
        cli.run("topics", "create")
        llm.script(tool_call("ask_agent", role="writer", question="Plan the release."),  # the asker, step 0
                   slow_first_token(3.0, ANSWER),  # the writer, answering while the asker is killed
                   ok("The writer's plan: step one, step two."))  # the asker, step 1, after redelivery
        port = free_port()
        processes = [Worker(cli, "orchestrator"), Worker(cli, "results"),
                     Worker(Cli({**cli.env, "AIOS_ROLES": "writer", "AIOS_INSTANCE": "writer"}), "agents")]
        asker = Worker(Cli({**cli.env, "AIOS_ROLES": "general", "AIOS_INSTANCE": "asker",
                            "AIOS_METRICS_PORT": str(port)}), "agents")
        try:
            for p in [*processes, asker]:
                p.start()
            project = f"ask-kill-{uuid.uuid4().hex[:6]}"
            client = TaskClient(settings_of(cli))
            task = build_task("Ship the release; ask the writer for a plan.", project=project, role="general")
            client.submit(task)
            client.close()
            # The writer's call has started: the asker is waiting for its answer. Kill the asker.
            wait_for(lambda: len(llm.requests) >= 2, 120, "the writer's call")
            asker.kill()
            # The answer lands on aios.results while no asker runs: the new one must find it there.
            wait_for(lambda: [r for r in read_all(cli, "results") if ask_depth(r["task_id"]) == 1], 120,
                     "the writer's result")
            asker.start()
            results = wait_for(lambda: (rs := read_all(cli, "results")) and
                               any(r["task_id"] == task["task_id"] for r in rs) and rs, 120, "the asker's result")
            resumed = metric(port, "aios_ask_questions_total", role="writer", outcome="resumed")
            asked_again = metric(port, "aios_ask_questions_total", role="writer", outcome="asked")
            replays = metric(port, "aios_llm_replays_total")
        finally:
            for p in [asker, *processes]:
                p.stop()
    by_persona = [str(r.body["messages"][0]["content"]) for r in llm.requests]
    writer_calls = by_persona.count(system_prompt("writer"))
    asker_calls = by_persona.count(system_prompt("general"))
    print(f"\nask_agent kill-and-redeliver: writer LLM calls {writer_calls}, asker LLM calls {asker_calls}, "
          f"asker journal hits: {replays:.0f} LLM step(s) replayed, {resumed:.0f} question(s) resumed, "
          f"{asked_again:.0f} asked again")
    assert writer_calls == 1, "the answering role was called again"
    assert asker_calls == 2, "the asker's journaled step was paid for again"
    assert (replays, resumed, asked_again) == (1, 1, 0)
    mine = [r for r in results if r["project_id"] == project]
    assert sorted((ask_depth(r["task_id"]), r["status"]) for r in mine) == [(0, "succeeded"), (1, "succeeded")]
    (final,) = [r for r in mine if r["task_id"] == task["task_id"]]
    assert final["output"] == "The writer's plan: step one, step two."
    asker_request = llm.requests[-1].body
    assert [m["content"] for m in asker_request["messages"] if m["role"] == "tool"] == [ANSWER]
