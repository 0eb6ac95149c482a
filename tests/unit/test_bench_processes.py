"""The capacity bench measures every process of the pipeline: `aios up` runs its processors as
children, so the supervisor alone (its first figures: 0.1 ms of CPU a task, 87 MB) says nothing."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from aios.bench.capacity import cpu_seconds, is_agent_worker, process_tree

# A parent that starts a child whose argv says `worker agents`, as the supervisor's do.
PARENT = ("import subprocess, sys, time\n"
          "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', 'worker', 'agents'])\n"
          "time.sleep(60)\n")


@pytest.fixture
def parent() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", PARENT])
    yield proc
    for pid in process_tree(proc.pid)[1:]:
        subprocess.run(["kill", str(pid)], check=False)
    proc.kill()
    proc.wait()


def test_the_tree_holds_the_children_and_finds_the_agent_worker(parent: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while len(process_tree(parent.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    tree = process_tree(parent.pid)
    assert tree[0] == parent.pid and len(tree) == 2
    assert [is_agent_worker(pid) for pid in tree] == [False, True]
    assert all(cpu_seconds(pid) >= 0 for pid in tree)


def test_a_process_that_is_gone_is_no_agent_and_has_no_children() -> None:
    assert not is_agent_worker(2**22 + 1)  # above pid_max's default: no such process
    assert process_tree(2**22 + 1) == [2**22 + 1]
