"""The events an agent worker emits for an assignment, built from its outcome: the attempt (and
its pickup), one LlmCall per step and one AgentMessage per tool call (the turn for memory is
``agent_privacy.memory_event``, which seals restricted content). Ids
derive from (task, attempt, step), so a replayed assignment re-emits the same events."""

from __future__ import annotations

import json
import uuid
from typing import Any

from aios.agents.runner import CANCELLED, AgentOutcome, CallRecord, call_id
from aios.schemas.events import envelope


def attempt_status(outcome: AgentOutcome) -> str:
    """The TaskResult status of an attempt's outcome."""
    if outcome.ok:
        return "succeeded"
    return "cancelled" if outcome.error_type == CANCELLED else "failed"


def started_event(a: dict[str, Any], agent_id: str) -> dict[str, Any]:
    """The attempt was picked up: the orchestrator counts its timeout from here, not from the
    dispatch, so a backlog on the role topic does not time attempts out."""
    return {
        **envelope(a["trace_id"]),
        "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"aios:started:{a['project_id']}/{a['task_id']}:{a['attempt']}")),
        "task_id": a["task_id"], "project_id": a["project_id"], "role": a["role"], "attempt": a["attempt"],
        "status": "started", "output": "", "error": None, "error_type": None, "agent_id": agent_id,
        "provider": "", "model": "", "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0, "latency_ms": 0.0,
        "submitted_at": a["submitted_at"], "recall": [], "artifacts": [],
    }


def result_event(a: dict[str, Any], outcome: AgentOutcome, agent_id: str, latency_ms: float,
                 recall: list[str] | None = None) -> dict[str, Any]:
    resp = outcome.response
    return {
        **envelope(a["trace_id"]),
        "task_id": a["task_id"],
        "project_id": a["project_id"],
        "role": a["role"],
        "attempt": a["attempt"],
        "status": attempt_status(outcome),
        "output": outcome.output,
        "error": outcome.error,
        "error_type": outcome.error_type,
        "agent_id": agent_id,
        "provider": resp.provider if resp else "",
        "model": resp.model if resp else "",
        "input_tokens": resp.usage.input_tokens if resp else 0,
        "output_tokens": resp.usage.output_tokens if resp else 0,
        "cost_usd": outcome.cost_usd,
        "latency_ms": latency_ms,
        "submitted_at": a["submitted_at"],
        "recall": recall or [],
        "artifacts": [ref.to_event() for ref in outcome.artifacts],
    }


def llm_call_events(a: dict[str, Any], outcome: AgentOutcome, agent_id: str) -> list[dict[str, Any]]:
    """One LlmCall per step. Ids derive from (task, attempt, step): a replay re-emits the same
    event, which every store keeps once, so a call is never counted (or billed) twice."""
    return [llm_call_event(a, call, outcome, agent_id) for call in outcome.calls]


def llm_call_event(a: dict[str, Any], call: CallRecord, outcome: AgentOutcome, agent_id: str) -> dict[str, Any]:
    resp = call.response
    cid = call_id(a["project_id"], a["task_id"], a["attempt"], call.step)
    last = call is outcome.calls[-1]
    return {
        **envelope(a["trace_id"]),
        "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"aios:llm-call:{cid}")),
        "call_id": cid,
        "task_id": a["task_id"],
        "project_id": a["project_id"],
        "agent_id": agent_id,
        "attempt": a["attempt"],
        "step": call.step,
        "provider": resp.provider,
        "model": resp.model,
        "strategy": call.strategy,
        "input_tokens": resp.usage.input_tokens,
        "output_tokens": resp.usage.output_tokens,
        "cost_usd": call.cost_usd,
        "latency_ms": resp.latency_ms,
        "ttft_ms": resp.ttft_ms,
        # Every step but the last was answered; the last carries the task's outcome.
        "outcome": "ok" if outcome.ok or not last else (outcome.error_type or "error"),
        "error": None if outcome.ok or not last else outcome.error,
        "fallback_chain": list(call.fallback_chain),
        "redacted": call.redacted,
        "queue_ms": call.queue_ms,
    }


def tool_messages(a: dict[str, Any], outcome: AgentOutcome, agent_id: str) -> list[dict[str, Any]]:
    """One AgentMessage per tool call, with what the tool returned; ids derive from the call,
    so a replay re-emits the same messages."""
    messages = []
    for record in outcome.tools:
        mid = f"{call_id(a['project_id'], a['task_id'], a['attempt'], record.step)}:{record.call.id}"
        content = {"tool": record.call.name, "arguments": dict(record.call.arguments), "result": record.result,
                   "step": record.step}
        messages.append({
            **envelope(a["trace_id"]),
            "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"aios:tool-call:{mid}")),
            "message_id": mid, "task_id": a["task_id"], "project_id": a["project_id"], "sender": agent_id,
            "recipient": None, "kind": "tool_call", "content": json.dumps(content, ensure_ascii=False),
        })
    return messages
