"""The shape of ``aios trace``'s story: attempts (retries) gather their hops; the rest stays on top."""

from __future__ import annotations

from aios.connectors.history.story import Attempt, Hop, Story


def hop(ts: int, event_type: str, topic: str, attempt: int | None = None, status: str = "",
        **detail: object) -> Hop:
    return Hop(ts, event_type, f"p.{topic}", 0, ts, f"e{ts}", "t" * 32, "task", "proj", "general", status,
               attempt=attempt, detail=dict(detail))


def test_a_retried_task_is_two_attempts_between_its_submit_and_its_result() -> None:
    hops = [
        hop(0, "Task", "tasks"),
        hop(5, "Assignment", "agent.general", 1),
        hop(9, "LlmCall", "llm-calls", 1, model="gpt-4o-mini"),
        hop(10, "TaskResult", "attempts", 1, "failed"),
        hop(600, "Assignment", "agent.general", 2),
        hop(700, "AgentMessage", "messages", 2, tool="search_memory"),
        hop(900, "LlmCall", "llm-calls", 2, model="gpt-4o-mini"),
        hop(901, "TaskResult", "attempts", 2, "succeeded"),
        hop(950, "TaskResult", "results", 2, "succeeded"),
    ]
    story = Story("task", ["t" * 32], hops)
    tree = story.tree()
    kinds = [(type(item).__name__, len(children)) for item, children in tree]
    assert kinds == [("Hop", 0), ("Attempt", 3), ("Attempt", 4), ("Hop", 0)]
    first, second = (item for item, _ in tree if isinstance(item, Attempt))
    assert (first.number, first.duration_ms, second.number, second.duration_ms) == (1, 5, 2, 301)
    assert [h.label() for h in second.hops] == ["Assignment", "execute_tool search_memory", "chat gpt-4o-mini",
                                                "TaskResult succeeded"]
    doc = story.to_dict()
    assert doc["duration_ms"] == 950 and [a["attempt"] for a in doc["attempts"]] == [1, 2]
    assert len(doc["events"]) == len(hops)


def test_an_empty_story_has_no_duration() -> None:
    story = Story("nothing", [], [])
    assert story.tree() == [] and story.to_dict()["duration_ms"] == 0
