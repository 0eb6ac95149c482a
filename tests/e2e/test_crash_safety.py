"""Crash safety, as issue 3 states it: with 200 tasks flowing, the agent worker, the orchestrator and
the results committer are killed with SIGKILL several times each and restarted. Every task still
ends with exactly one terminal result, and a read_committed consumer of ``aios.results`` never sees
a result twice."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from typing import Any

import pytest

from aios.agents.llm.servers.openai import FakeOpenAI
from aios.streams.kafka import TopicReader
from aios.streams.readmodels.task_client import TaskClient, build_task
from aios.streams.settings import Settings, load_settings
from tests.e2e.conftest import Cli

pytestmark = pytest.mark.integration

STANDALONE = 100
PLANS, PLAN_TASKS = 5, 20
TOTAL = STANDALONE + PLANS * PLAN_TASKS
IN_FLIGHT = 8


class Worker:
    """One ``aios worker NAME`` process that can be killed and started again; ``log`` keeps its stderr."""

    def __init__(self, cli: Cli, name: str) -> None:
        self.cli, self.name = cli, name
        self.proc: subprocess.Popen[str] | None = None
        self.reader: threading.Thread | None = None
        self.log: list[str] = []

    def start(self) -> None:
        proc = self.cli.start("worker", self.name)
        self.proc = proc
        ready = threading.Event()
        self.reader = threading.Thread(target=self._drain, args=(proc, ready), daemon=True)
        self.reader.start()
        if not ready.wait(120):
            raise AssertionError(f"worker {self.name} did not become ready:\n" + "".join(self.log[-30:]))

    def _drain(self, proc: subprocess.Popen[str], ready: threading.Event) -> None:
        for line in proc.stderr or ():
            self.log.append(line)
            if "aios: ready" in line:
                ready.set()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)  # no shutdown, no commit, no flush
        self.proc.wait(10)
        self._close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._close()

    def _close(self) -> None:
        if self.reader is not None:
            self.reader.join(10)  # it reads to the end of the dead process's stderr
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()


def plan(n: int) -> dict[str, Any]:
    # A chain of pairs: every task but the first two waits for one before it, so releases,
    # dependency outputs and state all cross the kills.
    tasks = [{"id": f"t{i}", "role": "general", "description": f"plan {n} step {i}",
              "depends_on": [f"t{i - 2}"] if i >= 2 else []} for i in range(PLAN_TASKS)]
    return {"project": f"crash-plan-{n}", "tasks": tasks}


def task_line(body: dict[str, Any]) -> str:
    """The task a chat request is for: the first line of its user message ("Task: ...")."""
    user = next(m["content"] for m in body["messages"] if m["role"] == "user")
    return str(user).splitlines()[0]


def task(result: dict[str, Any]) -> tuple[str, str]:
    return result["project_id"], result["task_id"]  # plan task ids are unique within a project


def settings_of(cli: Cli) -> Settings:
    return load_settings(topic_prefix=cli.env["AIOS_TOPIC_PREFIX"], kafka_bootstrap=cli.env["AIOS_KAFKA_BOOTSTRAP"],
                         data_dir=cli.env["AIOS_DATA_DIR"])


def read_all(cli: Cli, topic: str) -> list[dict[str, Any]]:
    s = settings_of(cli)
    reader = TopicReader(s, f"{s.kafka.topic_prefix}.{topic}", from_beginning=True)  # read_committed
    try:
        return [d.value for _, d in reader.events(timeout_s=3) if not isinstance(d, Exception)]
    finally:
        reader.close()


def committed_results(cli: Cli) -> list[dict[str, Any]]:
    return read_all(cli, "results")


def where_they_stopped(cli: Cli, missing: set[tuple[str, str]]) -> str:
    """For a task without a result: how far its events got (assignments, attempts, finals), so a
    failure names the hop that lost it."""
    seen: dict[tuple[str, str], list[str]] = {t: [] for t in missing}
    for topic in ("agent.general", "attempts", "finals"):
        for event in read_all(cli, topic):
            t = (event.get("project_id", ""), event.get("task_id", ""))
            if t in seen:
                seen[t].append(f"{topic}#{event.get('attempt')}:{event.get('status', '')}")
    return "\n".join(f"  {p}/{t}: {' '.join(hops) or 'no assignment'}" for (p, t), hops in sorted(seen.items()))


def _dumps_its_stacks_and_runs_on(worker: Worker) -> None:
    """SIGUSR1 writes every thread's stack to the worker's stderr (how to see where a stalled processor
    waits), and the worker carries on."""
    assert worker.proc is not None
    seen = len(worker.log)
    worker.proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while not any("most recent call first" in line for line in worker.log[seen:]) and time.monotonic() < deadline:
        time.sleep(0.1)
    dump = "".join(worker.log[seen:])
    assert "most recent call first" in dump and "aios/cli/run.py" in dump, dump[-3000:]
    assert worker.proc.poll() is None, "the worker exited on SIGUSR1"


@pytest.mark.timeout(600)
def test_sigkilled_workers_leave_exactly_one_result_per_task(cli: Cli, tmp_path: Any) -> None:
    rng = random.Random(7)
    with FakeOpenAI() as llm:
        # A window of IN_FLIGHT assignments per agent worker (the default is 256): several at once,
        # as in production, and few enough that the repeats a kill may cause stay a tight bound.
        cli.env.update({"AIOS_LLM": "openai:gpt-4o-mini", "AIOS_OPENAI_API_KEY": "sk-test",
                        "AIOS_OPENAI_BASE_URL": llm.base_url, "AIOS_LLM_MAX_RETRIES": "0",
                        "AIOS_AGENT_MAX_IN_FLIGHT": str(IN_FLIGHT),
                        # A killed member holds its partitions until its session times out: the
                        # least allowed, so nine kills wait 54 s for that, not 90.
                        "AIOS_KAFKA_SESSION_TIMEOUT_S": "6"})
        cli.run("topics", "create")
        workers = {name: Worker(cli, name) for name in ("orchestrator", "results", "agents")}
        try:
            for w in workers.values():
                w.start()
            _dumps_its_stacks_and_runs_on(workers["results"])
            for n in range(PLANS):
                path = tmp_path / f"plan{n}.json"
                path.write_text(json.dumps(plan(n)))
                cli.run("submit", "--plan", str(path))
            cli.run("submit", "standalone task 0", "--project", "crash-0")  # one as a user would
            client = TaskClient(settings_of(cli))
            for i in range(1, STANDALONE):  # the rest through one producer: a process each is slow
                client.submit(build_task(f"standalone task {i}", project=f"crash-{i % 10}"), flush=False)
            client.close()

            kills = Counter[str]()
            for victim in ["agents", "orchestrator", "agents", "results", "orchestrator", "agents",
                           "orchestrator", "results", "agents"]:
                time.sleep(rng.uniform(0.5, 2.0))
                workers[victim].kill()
                kills[victim] += 1
                workers[victim].start()

            deadline = time.monotonic() + 240
            results = committed_results(cli)
            while len({task(r) for r in results}) < TOTAL and time.monotonic() < deadline:
                time.sleep(3)
                results = committed_results(cli)
            # A worker that died on its own (not by our kills) would explain missing results: say so.
            dead = {name: "".join(w.log[-40:]) for name, w in workers.items()
                    if w.proc is not None and w.proc.poll() is not None}
            assert not dead, f"workers exited by themselves: {dead}"
        finally:
            for w in workers.values():
                w.stop()
        # A request whose sender was SIGKILLed mid-send arrives without a complete JSON body: it
        # was never answered, so it is counted apart.
        cut_off = sum(1 for r in llm.requests if "messages" not in r.body)
        calls = Counter(task_line(r.body) for r in llm.requests if "messages" in r.body)

    per_task = Counter(task(r) for r in results)
    assert kills == {"agents": 4, "orchestrator": 3, "results": 2}
    if len(per_task) < TOTAL:
        everything = {(f"crash-plan-{n}", f"t{i}") for n in range(PLANS) for i in range(PLAN_TASKS)}
        everything |= {(t["project_id"], t["task_id"]) for t in read_all(cli, "tasks")}
        missing = everything - set(per_task)
        raise AssertionError(f"{len(missing)} tasks have no result:\n{where_they_stopped(cli, missing)}")
    repeated = {t: n for t, n in per_task.items() if n > 1}
    assert not repeated, f"results visible more than once: {repeated}"
    # The orchestrator itself is transactional: even its outbox holds one committed final per task
    # (the committer's dedup is only the second line of defence).
    finals = Counter(task(f) for f in read_all(cli, "finals") if "status" in f)  # not the statuses
    assert finals == Counter(dict.fromkeys(per_task, 1)), {t: n for t, n in finals.items() if n != 1}
    assert all(r["status"] == "succeeded" for r in results), Counter(r["status"] for r in results)
    # Outputs of plan tasks came from the real SDK against the local server, not the offline provider.
    assert all(r["provider"] == "openai" for r in results)
    # Every (task, attempt 1, step 0) reached the LLM; a redelivered assignment replayed the journal.
    # A call repeats only if an agent kill lands while it is in flight (sent, and its answer not yet
    # in the journal), so repeats are bounded by the window at each agent kill, and reported. (The
    # bound was 8 per kill from when agents ran 8 at once; CI run 15 saw 46 repeats for 4 kills with
    # the default window of 256, and 0 duplicate results.)
    assert len(calls) == TOTAL
    repeated = sum(n - 1 for n in calls.values())
    print(f"kills {dict(kills)}, tasks {TOTAL}, results {len(results)}, duplicate results 0, "
          f"LLM calls {sum(calls.values())}, repeated LLM calls {repeated}, requests cut off by a kill {cut_off}")
    assert repeated + cut_off <= kills["agents"] * IN_FLIGHT
