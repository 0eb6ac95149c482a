"""The supervisor when a process cannot start: `aios up` stops and says why, with its last lines."""

from __future__ import annotations

from pathlib import Path

from aios.devstack.supervisor import ChildSpec, Supervisor
from aios.streams.settings import load_settings


def test_a_process_that_exits_while_starting_stops_the_start_with_its_last_lines(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, metrics_port=0, drain_timeout_s=5)
    said: list[str] = []
    supervisor = Supervisor(settings, [ChildSpec("broken", ("worker", "no-such-processor"))], terminal=said.append,
                            ready_timeout_s=60)
    assert supervisor.run() == 1
    assert said and "broken exited while starting (code 2)" in said[-1] and "no-such-processor" in said[-1]
    log = (tmp_path / "logs" / "aios.log").read_text()
    assert '"process": "broken"' in log and "supervisor: started broken" in log
