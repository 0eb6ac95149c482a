"""The ask_agent tool's logic with an in-memory channel and journal: what is asked, journaled,
replayed and refused. The real pipeline is tests/integration/test_ask_agent.py."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from aios.agents.llm.base import ToolCall
from aios.agents.tools import ToolContext, read_only_tools
from aios.agents.tools_ask import AskAgent, Asker, AskRequest, Reply, ask_depth, asked_task_id
from aios.schemas.limits import is_id


class MemoryJournal:
    def __init__(self) -> None:
        self.records: dict[tuple[str, int, int], Mapping[str, Any]] = {}

    async def get(self, task_id: str, attempt: int, step: int) -> Mapping[str, Any] | None:
        return self.records.get((task_id, attempt, step))

    async def put(self, task_id: str, attempt: int, step: int, record: Mapping[str, Any]) -> None:
        self.records.setdefault((task_id, attempt, step), record)


FORTY_TWO = Reply("succeeded", "42")


class Channel:
    @property
    def roles(self) -> frozenset[str]:
        return frozenset({"general", "writer"})

    def __init__(self, reply: Reply | None = FORTY_TWO, *, max_depth: int = 3,
                 timeout_s: float = 5.0) -> None:
        self.reply, self.max_depth, self.timeout_s = reply, max_depth, timeout_s
        self.submitted: list[AskRequest] = []
        self.waited: list[Mapping[str, Any]] = []
        self.replies: list[Reply] = []

    def mark(self) -> Mapping[str, Any]:
        return {"0": 7}

    async def submit(self, request: AskRequest) -> None:
        self.submitted.append(request)

    async def answer(self, request: AskRequest, mark: Mapping[str, Any]) -> Reply:
        self.waited.append(mark)
        if self.reply is None:
            await asyncio.sleep(3600)
        assert self.reply is not None
        return self.reply

    def replied(self, request: AskRequest, reply: Reply) -> None:
        self.replies.append(reply)


ASKER = Asker("p1", "t1", 1, "general")
QUESTION = {"role": "writer", "question": "What is the answer?"}


def ask(tool: AskAgent, arguments: Mapping[str, Any] = QUESTION) -> str:
    return asyncio.run(tool.run(arguments, ToolContext()))


def test_a_question_is_submitted_then_journaled_and_its_answer_returned() -> None:
    journal, channel = MemoryJournal(), Channel()
    assert ask(AskAgent(ASKER, channel, journal)) == "42"
    (request,) = channel.submitted
    assert request.task_id == asked_task_id("p1", "t1", 1, 0, 1) and ask_depth(request.task_id) == 1
    assert journal.records[("p1/t1#ask", 1, 0)]["mark"] == {"0": 7}
    assert journal.records[("p1/t1#answer", 1, 0)]["text"] == "42"
    assert channel.replies == [Reply("succeeded", "42")]


def test_a_replay_with_the_answer_journaled_neither_asks_nor_waits() -> None:
    journal = MemoryJournal()
    ask(AskAgent(ASKER, Channel(), journal))
    again = Channel(reply=None)  # would wait forever
    assert ask(AskAgent(ASKER, again, journal)) == "42"
    assert again.submitted == [] and again.waited == []


def test_a_replay_of_a_question_still_unanswered_waits_from_the_first_mark_without_asking() -> None:
    journal = MemoryJournal()
    asyncio.run(journal.put("p1/t1#ask", 1, 0, {"text": "", "task_id": "x", "role": "writer", "mark": {"0": 3}}))
    channel = Channel()
    assert ask(AskAgent(ASKER, channel, journal)) == "42"
    assert channel.submitted == [] and channel.waited == [{"0": 3}]


def test_questions_are_numbered_in_the_order_asked() -> None:
    channel = Channel()
    tool = AskAgent(ASKER, channel, MemoryJournal())
    ask(tool)
    ask(tool)
    assert [r.index for r in channel.submitted] == [0, 1]
    assert len({r.task_id for r in channel.submitted}) == 2


def test_a_question_past_the_depth_limit_is_refused_with_a_reason_the_model_reads() -> None:
    deep = Asker("p1", asked_task_id("p1", "t0", 1, 0, 2), 1, "writer")
    channel = Channel(max_depth=2)
    answer = ask(AskAgent(deep, channel, MemoryJournal()))
    assert answer.startswith("error: ask_agent refused") and "AIOS_ASK_MAX_DEPTH" in answer
    assert channel.submitted == []


def test_an_unknown_role_and_a_failed_answer_are_errors_the_model_reads() -> None:
    assert ask(AskAgent(ASKER, Channel(), None), {"role": "nobody", "question": "?"}).startswith("error: no agent")
    failed = Channel(Reply("failed", "", "unknown role 'writer'"))
    assert ask(AskAgent(ASKER, failed, None)) == "error: the writer agent did not answer (failed): unknown role 'writer'"


def test_no_answer_in_time_is_told_and_not_journaled() -> None:
    journal = MemoryJournal()
    answer = ask(AskAgent(ASKER, Channel(reply=None, timeout_s=0.05), journal))
    assert answer.startswith("error: the writer agent did not answer within")
    assert ("p1/t1#answer", 1, 0) not in journal.records  # a later delivery may still find it


@given(project=st.from_regex(r"[A-Za-z0-9._:-]{1,128}", fullmatch=True),
       task=st.from_regex(r"[A-Za-z0-9._:-]{1,128}", fullmatch=True),
       attempt=st.integers(1, 1000), index=st.integers(0, 10_000), depth=st.integers(1, 32))
def test_asked_task_ids_are_valid_ids_that_say_their_depth(project: str, task: str, attempt: int, index: int,
                                                          depth: int) -> None:
    tid = asked_task_id(project, task, attempt, index, depth)
    assert is_id(tid) and ask_depth(tid) == depth


@settings(max_examples=200)
@given(arguments=st.dictionaries(st.text(max_size=10), st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10), max_size=4))
def test_any_arguments_get_a_text_answer_never_an_exception(arguments: dict[str, Any]) -> None:
    box = read_only_tools().with_tools(AskAgent(ASKER, Channel(), MemoryJournal()))
    answer = asyncio.run(box.run(ToolCall("c1", "ask_agent", arguments), ToolContext()))
    assert isinstance(answer, str)
