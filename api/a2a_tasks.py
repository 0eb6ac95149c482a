"""AIOS's tasks and roles in A2A's terms: the Agent Cards, a task's state as an A2A ``Task``, and a
message's text and options as the task to submit.

An A2A task is one AIOS task: its id is the task id, its ``contextId`` the project. AIOS states map
onto A2A's: a task waiting on the orchestrator is ``submitted``, one dispatched to its role (or
picked up by an agent) is ``working``, and the terminal states are ``completed``, ``failed`` and ``canceled``. The answer is the
artifact ``output``; why a task failed is its status message.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from a2a.types.a2a_pb2 import (
    ROLE_AGENT,
    ROLE_USER,
    TASK_STATE_CANCELED,
    TASK_STATE_COMPLETED,
    TASK_STATE_FAILED,
    TASK_STATE_SUBMITTED,
    TASK_STATE_WORKING,
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    Artifact,
    HTTPAuthSecurityScheme,
    Message,
    Part,
    SecurityRequirement,
    SecurityScheme,
    StringList,
    Task,
    TaskState,
    TaskStatus,
)
from a2a.utils.errors import ContentTypeNotSupportedError, InvalidParamsError, UnsupportedOperationError
from google.protobuf.json_format import MessageToDict
from google.protobuf.struct_pb2 import Struct, Value

from aios.agents.roles import load_roles
from aios.schemas import limits as L

OUTPUT = "output"  # the artifact that holds a task's answer
LIVE = "live"  # the artifact message/stream appends the answer's tokens to as they come
BEARER = "bearer"
PROTOCOL_VERSION = "1.0"
_ID = re.compile(L.ID_PATTERN)
# AIOS task states (streams/orchestration/dag.py, plus the view's "submitted") by A2A state.
_STATES: dict[str, int] = {
    "submitted": TASK_STATE_SUBMITTED, "pending": TASK_STATE_SUBMITTED, "ready": TASK_STATE_SUBMITTED,
    "awaiting_approval": TASK_STATE_SUBMITTED, "dispatched": TASK_STATE_WORKING,
    "succeeded": TASK_STATE_COMPLETED, "failed": TASK_STATE_FAILED, "skipped": TASK_STATE_FAILED,
    "cancelled": TASK_STATE_CANCELED,
}
TERMINAL = frozenset({"succeeded", "failed", "skipped", "cancelled"})


def a2a_state(state: str, attempts: int) -> int:
    """The A2A state of an AIOS task ``state``; a task with an attempt under way is working."""
    mapped = _STATES.get(state, TASK_STATE_WORKING)
    if mapped == TASK_STATE_SUBMITTED and attempts > 0 and state != "awaiting_approval":
        return TASK_STATE_WORKING
    return mapped


def state_name(state: int) -> str:
    """``TASK_STATE_COMPLETED`` -> ``completed``, for logs, metrics and messages."""
    return str(TaskState.Name(state)).removeprefix("TASK_STATE_").lower()


@dataclass(frozen=True)
class TaskView:
    """What the API knows of a task, in the fields an A2A ``Task`` needs."""

    task_id: str
    project_id: str
    role: str
    description: str
    state: str
    attempts: int = 0
    reason: str = ""
    output: str | None = None  # the terminal result's output
    sealed: bool = False


def to_task(view: TaskView, *, history: bool = True) -> Task:
    """``view`` as an A2A task: the answer as the ``output`` artifact, a failure's reason as the
    status message, the description as the first (user) message of its history."""
    state = a2a_state(view.state, view.attempts)
    status = TaskStatus(state=state)  # type: ignore[arg-type]
    if view.reason and state in (TASK_STATE_FAILED, TASK_STATE_CANCELED):
        status.message.CopyFrom(agent_message(view, view.reason))
    task = Task(id=view.task_id, context_id=view.project_id, status=status)
    if view.output is not None and state == TASK_STATE_COMPLETED:
        task.artifacts.append(Artifact(artifact_id=OUTPUT, name=OUTPUT, parts=[Part(text=view.output)]))
    task.metadata.update({"role": view.role, "aios_state": view.state, "attempts": view.attempts,
                          "sealed": view.sealed})
    if history and view.description:
        task.history.append(Message(message_id=f"{view.task_id}:request", context_id=view.project_id,
                                    task_id=view.task_id, role=ROLE_USER, parts=[Part(text=view.description)]))
    return task


def agent_message(view: TaskView, text: str) -> Message:
    return Message(message_id=f"{view.task_id}:status", context_id=view.project_id, task_id=view.task_id,
                   role=ROLE_AGENT, parts=[Part(text=text)])


@dataclass(frozen=True)
class Submission:
    """What a message asks for, checked: the description, and where and how to run it."""

    description: str
    role: str
    project: str
    priority: int
    privacy: str


def read_message(message: Message, metadata: Mapping[str, Any], *, role: str | None, roles: Sequence[str],
                 default_role: str) -> Submission:
    """The task ``message`` asks for. Options come from the message's (or the request's) metadata:
    ``role`` (on the deployment's endpoint), ``project`` (else the ``contextId``, else ``default``),
    ``priority`` and ``privacy``. A bad message raises an A2A error that says what to change."""
    if message.task_id:
        raise UnsupportedOperationError(
            "an AIOS task takes one message and cannot be continued: send a new message without taskId "
            "(give the same contextId to keep it in the same project)")
    text = message_text(message.parts)
    if not text.strip():
        raise InvalidParamsError("the message has no text: send the task's description as a text part")
    options = {**dict(metadata), **struct_dict(message.metadata, "the message's metadata")}
    chosen = role or str(options.get("role") or default_role)
    if chosen not in roles:
        raise InvalidParamsError(f"unknown role {chosen!r}; this deployment runs: {', '.join(roles)}")
    project = str(options.get("project") or message.context_id or "default")
    if len(project) > L.MAX_ID_CHARS or not _ID.match(project):
        raise InvalidParamsError(f"project (contextId) {project[:80]!r} is not a valid id: letters, digits and "
                                 f"._:- up to {L.MAX_ID_CHARS} characters")
    priority = options.get("priority", 0)
    if isinstance(priority, float) and priority.is_integer():
        priority = int(priority)  # JSON numbers reach a Struct as floats
    if not isinstance(priority, int) or isinstance(priority, bool) or not L.MIN_PRIORITY <= priority <= L.MAX_PRIORITY:
        raise InvalidParamsError(f"priority must be an integer from {L.MIN_PRIORITY} to {L.MAX_PRIORITY}")
    privacy = str(options.get("privacy", "normal"))
    if privacy not in ("normal", "restricted"):
        raise InvalidParamsError("privacy must be 'normal' or 'restricted'")
    return Submission(text, chosen, project, priority, privacy)


def message_text(parts: Sequence[Part]) -> str:
    """Text parts as they are, data parts as JSON; files are refused (AIOS tasks are text)."""
    out = []
    for part in parts:
        kind = part.WhichOneof("content")
        if kind == "text":
            out.append(part.text)
        elif kind == "data":
            out.append(json.dumps(plain_json(part.data, "a data part"), ensure_ascii=False))
        else:
            raise ContentTypeNotSupportedError(
                "AIOS tasks take text and data parts; put a file's content in a text part or store it as an artifact")
    return "\n".join(out)


def plain_json(value: Struct | Value, what: str) -> Any:
    """``value`` as Python JSON; a number JSON cannot hold (Infinity, NaN: Python's JSON reader takes
    them) is the caller's mistake, said as such."""
    try:
        return MessageToDict(value)
    except ValueError as exc:
        raise InvalidParamsError(f"{what} must be plain JSON: {exc}") from exc


def struct_dict(value: Struct, what: str) -> dict[str, Any]:
    found = plain_json(value, what) if value.fields else {}
    return found if isinstance(found, dict) else {}


def card(*, name: str, description: str, url: str, skills: Sequence[AgentSkill]) -> AgentCard:
    """An Agent Card for a JSON-RPC endpoint at ``url`` that streams and takes bearer credentials."""
    return AgentCard(
        name=name, description=description, version="1",
        # The same endpoint speaks both versions; the 0.3 entry also gives the card the fields a 0.3
        # client reads (url, preferredTransport, protocolVersion).
        supported_interfaces=[AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version=v)
                              for v in (PROTOCOL_VERSION, "0.3")],
        capabilities=AgentCapabilities(streaming=True, push_notifications=False),
        security_schemes={BEARER: SecurityScheme(http_auth_security_scheme=HTTPAuthSecurityScheme(
            scheme="bearer", description="An AIOS API key (aios_…) or an OIDC JWT, as the REST API takes."))},
        security_requirements=[SecurityRequirement(schemes={BEARER: StringList()})],
        default_input_modes=["text/plain", "application/json"], default_output_modes=["text/plain"],
        skills=list(skills),
    )


def role_skill(role: str) -> AgentSkill:
    """A role as a skill: its persona is what it does."""
    r = load_roles().get(role)
    return AgentSkill(id=role, name=role, description=r.persona, tags=[role, "aios"],
                      input_modes=["text/plain", "application/json"], output_modes=["text/plain"])


def deployment_card(base_url: str, roles: Sequence[str]) -> AgentCard:
    return card(name="AIOS", url=f"{base_url}/v1/a2a", skills=[role_skill(r) for r in roles],
                description="An AIOS deployment: each skill is a role. Pick one with the message metadata 'role' "
                            "(default: the first skill); the task runs on Kafka and its answer comes back.")


def role_card(base_url: str, role: str) -> AgentCard:
    return card(name=f"AIOS {role}", url=f"{base_url}/v1/a2a/{role}", skills=[role_skill(role)],
                description=f"The AIOS role {role!r}: {load_roles().get(role).persona}")
