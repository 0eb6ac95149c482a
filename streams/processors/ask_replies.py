"""Answers to ``ask_agent`` questions, for the agent workers that wait for them.

An asked question is a task of the asker's project; its answer is that task's one terminal result
on ``<prefix>.results`` (read committed: exactly once). Every agent worker reads every partition of
the results topic from its end, with no consumer group, and hands the results of asked tasks
(``ask-<depth>-…`` ids) to the questions waiting for them. A waiting question holds only its place
in the worker's in-flight window: no thread, no consumer.

A question asked before this worker started (its asker's first worker died while it waited) is
looked for from where that first wait started, the ``mark`` journaled with the request: the part
of the topic between the mark and where this worker began reading is read once, in a thread.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from confluent_kafka import KafkaError as CKafkaError
from confluent_kafka import Message, TopicPartition

from aios.agents.roles import load_roles
from aios.agents.tools_ask import AskRequest, Reply, ask_depth
from aios.schemas.errors import SchemaError
from aios.streams.engine.runtime import Runtime
from aios.streams.engine.tail import TopicTail
from aios.streams.kafka import make_consumer
from aios.streams.metrics import ASK_QUESTIONS, ASK_WAITING
from aios.streams.processors.ask_events import ask_message, ask_task, reply_message
from aios.streams.sealing import Sealer

ASKED_MARK = b"ask-"  # in the encoded bytes of every result of an asked task (its id, in plain text)
RECENT_REPLIES = 10_000  # answers kept for a question that starts waiting just after its answer came
Key = tuple[str, str]  # (project, task)
Send = Callable[[str, str, dict[str, Any], str], None]  # (topic, record, value, key)
SendAcked = Callable[[str, str, dict[str, Any], str], Awaitable[None]]  # returns once the broker has it


def count_question(role: str, outcome: str) -> None:
    """What an ask_agent question came to, in ``aios_ask_questions_total``."""
    ASK_QUESTIONS.labels(role, outcome).inc()


class ResultsWatcher(TopicTail):
    """Reads the results topic from its end and resolves the questions waiting for their answers."""

    name = "ask-replies"

    def __init__(self, rt: Runtime, sealer: Sealer, **kwargs: Any) -> None:
        super().__init__(rt, rt.topics.results, "ask_agent answers", **kwargs)
        self.sealer = sealer
        self.recent: OrderedDict[Key, Reply] = OrderedDict()
        self.waiting: dict[Key, list[asyncio.Future[Reply]]] = {}

    def mark(self) -> dict[str, int]:
        """Where reading is now, per partition: any result produced later is at or past it."""
        return {str(p): offset for p, offset in self.positions.items()}

    async def answer_of(self, project: str, task_id: str, mark: Mapping[str, Any]) -> Reply:
        """The terminal result of (project, task), looked for from ``mark`` on."""
        key = (project, task_id)
        known = self.recent.get(key)
        if known is not None:
            return known
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self.waiting.setdefault(key, []).append(future)
        ASK_WAITING.inc()
        try:
            behind = {p: int(mark[str(p)]) for p in self.began_at if str(p) in mark and int(mark[str(p)]) < self.began_at[p]}
            if behind:  # asked before this worker started: read what it missed
                found = await asyncio.to_thread(self._catch_up, key, behind)
                if found is not None:
                    return found
            return await future
        finally:
            ASK_WAITING.dec()
            left = [f for f in self.waiting.get(key, []) if f is not future]
            if left:
                self.waiting[key] = left
            else:
                self.waiting.pop(key, None)

    # --- reading ---------------------------------------------------------------------------

    def handle(self, msg: Message) -> None:
        found = self._reply_of(msg.value())
        if found is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._resolve, *found)

    def _reply_of(self, value: bytes | None) -> tuple[Key, Reply] | None:
        """The (project, task) and reply a result carries, if it answers a question."""
        if value is None or ASKED_MARK not in value:
            return None  # most results answer no question: skip them without decoding
        try:
            v = self.rt.codec.decode(value, expect="TaskResult").value
        except SchemaError:
            return None  # the results committer writes this topic; a stray record is not an answer
        if ask_depth(str(v.get("task_id", ""))) == 0:
            return None
        v, _ = self.sealer.reveal_event("results", v)
        reply = Reply(str(v["status"]), str(v.get("output") or ""), v.get("error"), float(v.get("cost_usd") or 0.0))
        return (str(v["project_id"]), str(v["task_id"])), reply

    def _resolve(self, key: Key, reply: Reply) -> None:
        self.recent[key] = reply
        self.recent.move_to_end(key)
        while len(self.recent) > RECENT_REPLIES:
            self.recent.popitem(last=False)
        for future in self.waiting.get(key, []):
            if not future.done():
                future.set_result(reply)

    def _catch_up(self, key: Key, behind: dict[int, int]) -> Reply | None:
        """Read [mark, where this worker started) of each partition for the answer to ``key``."""
        topic = self.rt.topics.results
        reader = make_consumer(self.rt.settings, group=f"{self.rt.settings.kafka.topic_prefix}-reader",
                               **{"enable.partition.eof": True})
        try:
            reader.assign([TopicPartition(topic, p, offset) for p, offset in behind.items()])
            open_parts = set(behind)
            deadline = time.monotonic() + 60
            while open_parts and time.monotonic() < deadline:
                for msg in reader.consume(500, 0.5):
                    part = int(msg.partition() or 0)
                    err = msg.error()
                    if err is not None:
                        if err.code() == CKafkaError._PARTITION_EOF:
                            open_parts.discard(part)
                        continue
                    if int(msg.offset() or 0) >= self.began_at.get(part, 0):
                        open_parts.discard(part)  # the live reader covers the rest
                        reader.pause([TopicPartition(topic, part)])
                        continue
                    found = self._reply_of(msg.value())
                    if found is not None and found[0] == key:
                        return found[1]
            return None
        finally:
            reader.close()


class AskSender:
    """The worker's side of an :class:`~aios.agents.tools_ask.AskChannel`: submit the answering task
    (awaiting the broker's acknowledgement) and say so on the messages topic; wait through the
    :class:`ResultsWatcher`."""

    def __init__(self, rt: Runtime, watcher: ResultsWatcher, send_acked: SendAcked, send: Send) -> None:
        s = rt.settings.processing
        self.rt, self.watcher = rt, watcher
        self.max_depth, self.timeout_s = s.ask_max_depth, s.ask_timeout_s
        self._send_acked, self._send = send_acked, send

    @property
    def roles(self) -> frozenset[str]:
        # Any role of the registry (as last reloaded) may be asked: the orchestrator fails one this
        # deployment does not run, and that failure is the answer the model sees.
        return frozenset(load_roles().names())

    def mark(self) -> dict[str, int]:
        return self.watcher.mark()

    async def submit(self, request: AskRequest) -> None:
        rt = self.rt
        task = ask_task(request, rt.agent_id)
        await self._send_acked(rt.topics.tasks, "Task", rt.sealer.seal_task(task), request.asker.project_id)
        self._send(rt.topics.messages, "AgentMessage", ask_message(request, rt.agent_id, rt.sealer),
                   request.asker.task_id)

    async def answer(self, request: AskRequest, mark: Mapping[str, Any]) -> Reply:
        return await self.watcher.answer_of(request.asker.project_id, request.task_id, mark)

    def replied(self, request: AskRequest, reply: Reply) -> None:
        self._send(self.rt.topics.messages, "AgentMessage", reply_message(request, reply, self.rt.agent_id, self.rt.sealer),
                   request.asker.task_id)
