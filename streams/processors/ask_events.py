"""The events of one ``ask_agent`` question: the answering task (a Task of the asker's project),
and the question and its answer as AgentMessages (kinds ``ask`` and ``reply``) paired by the
answering task's id. Ids derive from that task's id, so a replayed asker re-emits the same events;
a restricted asker's question and answer are sealed like its other messages."""

from __future__ import annotations

import json
import uuid
from typing import Any

from aios.agents.tools_ask import AskRequest, Reply
from aios.schemas.events import envelope
from aios.streams.sealing import Sealer, is_restricted, message_aad


def ask_task(request: AskRequest, agent_id: str) -> dict[str, Any]:
    """The task that answers ``request``: the answering role works on the question as its description."""
    a = request.asker
    return {
        **envelope(a.trace_id or None),
        "event_id": _id(request, "task"), "task_id": request.task_id, "project_id": a.project_id,
        "role": request.role, "description": request.question, "priority": 0, "depends_on": [],
        "privacy": a.privacy, "submitted_by": f"agent:{agent_id}",
        "metadata": {"ask.asker_task": a.task_id, "ask.asker_role": a.role, "ask.asker_attempt": str(a.attempt),
                     "ask.depth": str(a.depth + 1)},
    }


def ask_message(request: AskRequest, agent_id: str, sealer: Sealer) -> dict[str, Any]:
    """The question, from the asking agent to the role's inbox."""
    content = {"role": request.role, "question": request.question, "task_id": request.task_id}
    return _message(request, agent_id, "ask", request.role, content, sealer)


def reply_message(request: AskRequest, reply: Reply, agent_id: str, sealer: Sealer) -> dict[str, Any]:
    """The answer, back to the asking task."""
    content = {"role": request.role, "status": reply.status, "answer": reply.output, "error": reply.error,
               "cost_usd": reply.cost_usd, "task_id": request.task_id}
    return _message(request, agent_id, "reply", request.asker.task_id, content, sealer)


def _message(request: AskRequest, agent_id: str, kind: str, recipient: str, content: dict[str, Any],
             sealer: Sealer) -> dict[str, Any]:
    a = request.asker
    mid = f"{a.project_id}/{a.task_id}:{a.attempt}:ask{request.index}:{kind}"
    text = json.dumps(content, ensure_ascii=False)
    if sealer.enabled and is_restricted(a.privacy):
        text = sealer.seal(text, message_aad(a.project_id, mid))
    return {
        **envelope(a.trace_id or None), "event_id": _id(request, kind), "message_id": mid, "task_id": a.task_id,
        "project_id": a.project_id, "sender": agent_id, "recipient": recipient, "kind": kind, "content": text,
        "correlation_id": request.task_id,
    }


def _id(request: AskRequest, what: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"aios:ask:{request.asker.project_id}/{request.task_id}:{what}"))
