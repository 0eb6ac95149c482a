"""What `aios top` shows, folded from events (pure; the tmux test shows it live)."""

from __future__ import annotations

from typing import Any

from aios.streams.readmodels.agent_registry import is_forgotten, live_roles_of, require_served, shown_state
from aios.streams.readmodels.top import TopState

NOW = 1_800_000_000_000


def agent(agent_id: str, roles: list[str], *, silent_s: float = 0, state: str = "ready") -> dict[str, Any]:
    return {"agent_id": agent_id, "role": roles[0], "roles": roles, "state": state, "in_flight": ["t1"],
            "heartbeat_interval_ms": 5000, "timestamp": NOW - int(silent_s * 1000)}


def status(project: str, tasks: list[tuple[str, str]], percent: float = 50.0) -> dict[str, Any]:
    return {"project_id": project, "state": "running", "percent_done": percent, "cost_usd": 0.25,
            "counts": {"succeeded": 1}, "notes": [], "tasks": [{"task_id": f"t{i}", "role": r, "state": s}
                                                                for i, (r, s) in enumerate(tasks)]}


def result(project: str, role: str, ok: bool, at: int = NOW) -> dict[str, Any]:
    return {"project_id": project, "role": role, "status": "succeeded" if ok else "failed", "timestamp": at}


def test_agents_live_then_gone_then_forgotten() -> None:
    state = TopState(forget_after_s=60)
    state.agent(agent("live", ["qa"]))
    state.agent(agent("silent", ["qa"], silent_s=20))
    state.agent(agent("old", ["qa"], silent_s=120))
    shown = state.snapshot(now=NOW).agents
    assert [(a["agent_id"], a["state"]) for a in shown] == [("live", "ready"), ("silent", "gone")]
    state.agent_gone("live")  # its tombstone
    assert [a["agent_id"] for a in state.snapshot(now=NOW).agents] == ["silent"]


def test_tasks_per_role_and_projects_with_filters() -> None:
    state = TopState()
    state.project(status("p1", [("qa", "dispatched"), ("writer", "dispatched"), ("qa", "succeeded")]))
    state.project(status("p2", [("qa", "dispatched")], percent=100.0))
    for ok in (True, True, False):
        state.attempt(result("p1", "qa", ok, at=NOW - 1000))
    state.attempt(result("p2", "writer", True, at=NOW - 60_000))  # long ago: counted, not in the rate
    flows = {f.role: f for f in state.snapshot(now=NOW).roles}
    assert (flows["qa"].in_flight, flows["qa"].succeeded, flows["qa"].failed) == (2, 2, 1)
    assert flows["qa"].done_per_s > 0 and flows["writer"].done_per_s == 0
    only = state.snapshot(project="p2", now=NOW)
    assert [p["project_id"] for p in only.projects] == ["p2"] and only.projects[0]["percent_done"] == 100.0
    assert {f.role: f.in_flight for f in only.roles} == {"qa": 1, "writer": 0}
    by_role = state.snapshot(role="writer", now=NOW)
    assert [f.role for f in by_role.roles] == ["writer"] and [p["project_id"] for p in by_role.projects] == ["p1"]


def test_the_last_dead_letters_newest_first() -> None:
    state = TopState()
    for i in range(15):
        state.dead_letter({"timestamp": NOW + i, "processor": "orchestrator", "source_topic": "aios.tasks",
                           "source_partition": 0, "source_offset": i, "error_type": "UndecodableError",
                           "error": "x" * 500, "key": "p1" if i % 2 else "p2"})
    letters = state.snapshot(now=NOW).dead_letters
    assert len(letters) == 10 and letters[0]["source"] == "aios.tasks[0]@14" and len(letters[0]["error"]) == 200
    assert all(d["source"].endswith(("@13", "@11", "@9", "@7", "@5")) for d in state.snapshot(project="p1").dead_letters)


def test_presence_rules_and_the_served_roles_check() -> None:
    stopped = agent("s", ["qa"], state="stopped", silent_s=30)
    assert shown_state(stopped, NOW) == "stopped" and not is_forgotten(stopped, NOW, 60)
    assert shown_state(agent("g", ["qa"], silent_s=16), NOW) == "gone"
    assert live_roles_of([agent("a", ["qa", "writer"]), agent("g", ["planner"], silent_s=16)], NOW) == {"qa", "writer"}
    require_served({"qa"}, {"qa", "writer"})
    try:
        require_served({"planner", "qa"}, {"qa"})
    except Exception as exc:  # noqa: BLE001 - the message is what is under test
        assert "no live agent serves 'planner'" in str(exc) and "aios worker agents --role planner" in str(exc)
    else:
        raise AssertionError("an unserved role must be refused")
