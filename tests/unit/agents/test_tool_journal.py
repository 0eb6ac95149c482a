"""Tool calls are journaled under their call site (task, attempt, step, index): in an attempt, the
runner records every call's answer, so a replay reads it back and never runs the tool again; outside
one, the toolbox records the answers of tools with effects (``journaled = True``) when given a journal."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aios.agents.llm.base import ToolSpec
from aios.agents.llm.openai_provider import OpenAIProvider
from aios.agents.llm.servers.openai import FakeOpenAI, ok, tool_call
from aios.agents.runner import AgentTask, run_task
from aios.agents.tools import Toolbox, ToolContext

SPEC = {"type": "object", "required": ["q"], "properties": {"q": {"type": "string"}}}


class DictJournal:
    def __init__(self) -> None:
        self.records: dict[tuple[str, int, int], Mapping[str, Any]] = {}

    async def get(self, task_id: str, attempt: int, step: int) -> Mapping[str, Any] | None:
        return self.records.get((task_id, attempt, step))

    async def put(self, task_id: str, attempt: int, step: int, record: Mapping[str, Any]) -> None:
        self.records.setdefault((task_id, attempt, step), record)


class Counting:
    def __init__(self, name: str, journaled: bool) -> None:
        self.spec = ToolSpec(name, "counts its calls", SPEC)
        self.journaled = journaled
        self.calls = 0

    async def run(self, arguments: Mapping[str, Any], ctx: ToolContext) -> str:
        self.calls += 1
        return f"{self.spec.name} answer {self.calls} to {arguments['q']}"


TASK = AgentTask(task_id="t1", project_id="p1", role="general", description="ask twice")


async def test_a_replayed_attempt_reads_the_journaled_tool_answers(
        fake_openai: FakeOpenAI, make_openai: Callable[..., OpenAIProvider]) -> None:
    remote, local = Counting("remote", journaled=True), Counting("local", journaled=False)
    box, journal = Toolbox([remote, local]), DictJournal()
    # One step asks both tools; the same script twice: the LLM journal is the test's, so the
    # second run calls the LLM again but must not call the remote tool again.
    fake_openai.script(tool_call("remote", q="a"), ok("done"), tool_call("remote", q="a"), ok("done"))
    first = await run_task(make_openai(), TASK, tools=box, journal=journal)
    records_after_first = dict(journal.records)
    journal.records = {k: v for k, v in journal.records.items() if "#tool" in k[0]}  # LLM answers forgotten
    second = await run_task(make_openai(), TASK, tools=box, journal=journal)
    assert first.ok and second.ok
    assert remote.calls == 1, "the replay read the remote tool's answer from the journal"
    assert [t.result for t in first.tools] == [t.result for t in second.tools] == ["remote answer 1 to a"]
    assert records_after_first[("p1/t1#tool0", 1, 0)]["text"] == "remote answer 1 to a"


async def test_tools_without_effects_run_again_and_no_journal_means_no_record() -> None:
    local, remote = Counting("local", journaled=False), Counting("remote", journaled=True)
    box, journal = Toolbox([local, remote]), DictJournal()
    from aios.agents.llm.base import ToolCall
    from aios.agents.tools import CallSite

    site = ToolContext(journal=journal, site=CallSite("p/t", 1, 0, 0))
    for _ in range(2):
        await box.run(ToolCall("c", "local", {"q": "x"}), site)
        await box.run(ToolCall("c", "remote", {"q": "x"}), ToolContext())  # no journal given: always runs
    assert (local.calls, remote.calls, journal.records) == (2, 2, {})
    # A bad call never reaches the tool nor the journal.
    assert (await box.run(ToolCall("c", "remote", {}), site)).startswith("error: bad arguments")
    assert journal.records == {}
