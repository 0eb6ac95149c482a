"""Remote A2A agents as tools: the model calls ``ask_<name>(message)`` and reads the agent's answer.

The call goes out with the official ``a2a-sdk`` client (JSON-RPC over HTTP, the agent's card read
once from ``<url>/.well-known/agent-card.json``): ``message/send``, then ``tasks/get`` until the
remote task ends or the tool's timeout passes. The tool is ``journaled``: the toolbox records its
answer under the call's (task, attempt, step, index), so a redelivered assignment reads the answer
back and never calls the remote agent again. The message id sent is that same call id, so a remote
agent that deduplicates by message id is safe even from a crash between its answer and the record.

A remote agent that cannot be reached, fails its task, answers garbage or runs out of time is an
error text the model can act on: a remote agent never fails the attempt by itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from aios.agents.llm.base import ToolSpec
from aios.agents.tools import Tool, ToolContext
from aios.schemas.errors import ConfigError

if TYPE_CHECKING:
    from a2a.client import Client
    from a2a.types.a2a_pb2 import Task

MAX_MESSAGE_CHARS = 8_000  # what the model may send in one call
POLL_S = 0.5  # between tasks/get while the remote task runs
CARD_TIMEOUT_S = 10.0
# Told (agent name, outcome, seconds) after each real call: "ok", "failed", "error" or "timeout".
Observer = Callable[[str, str, float], None]


class A2AExtraMissing(ConfigError):
    """The a2a extra is not installed but a remote agent is configured."""


def require_sdk() -> None:
    """Raise :class:`A2AExtraMissing`, saying what to install, when ``a2a-sdk`` is absent."""
    try:
        import a2a.client  # noqa: F401
    except ImportError as exc:
        raise A2AExtraMissing("remote A2A agents need the a2a extra: pip install 'aios[a2a]' "
                              "(or unset AIOS_A2A_AGENTS)") from exc


@dataclass(frozen=True)
class RemoteAgent:
    """A remote A2A agent: where it is, how to authenticate, how long a call may take."""

    name: str
    url: str
    token: str | None = None
    timeout_s: float = 120.0
    description: str = ""


class RemoteFailure(Exception):  # noqa: N818 - internal: becomes the text the model reads
    """The remote agent answered, but not with a usable result."""


class AskRemoteAgent:
    """``ask_<name>``: one message to the remote agent, its final answer back as text."""

    journaled = True

    def __init__(self, agent: RemoteAgent, *, observe: Observer | None = None) -> None:
        require_sdk()
        self.agent = agent
        self.observe = observe
        about = agent.description or "a remote agent reached over the A2A protocol"
        self.spec = ToolSpec(
            f"ask_{agent.name}",
            f"Ask the remote agent '{agent.name}' ({about}). Send a complete, self-contained request; the "
            "answer is its final reply.",
            {"type": "object", "required": ["message"], "additionalProperties": False,
             "properties": {"message": {"type": "string", "minLength": 1, "maxLength": MAX_MESSAGE_CHARS,
                                        "description": "What to ask the remote agent."}}},
        )
        self._clients: dict[int, tuple[httpx.AsyncClient, Client]] = {}  # by event loop: httpx is loop-bound
        self._lock = asyncio.Lock()

    async def run(self, arguments: Mapping[str, Any], ctx: ToolContext) -> str:
        name, started = self.agent.name, time.perf_counter()
        call_id = ctx.site.call_id if ctx.site is not None else None
        outcome = "error"
        try:
            async with asyncio.timeout(self.agent.timeout_s):
                answer = await self._ask(str(arguments["message"]), call_id)
            outcome = "ok"
            return answer
        except TimeoutError:
            outcome = "timeout"
            return f"error: the remote agent {name!r} did not answer within {self.agent.timeout_s:g}s"
        except RemoteFailure as exc:
            outcome = "failed"
            return f"error: the remote agent {name!r} {exc}"
        except _transport_errors() as exc:
            return f"error: the remote agent {name!r} could not be asked: {type(exc).__name__}: {exc}"
        finally:
            if self.observe is not None:
                self.observe(name, outcome, time.perf_counter() - started)

    async def _ask(self, text: str, call_id: str | None) -> str:
        from a2a.helpers.proto_helpers import new_text_message
        from a2a.types.a2a_pb2 import ROLE_USER, GetTaskRequest, SendMessageRequest

        client = await self._client()
        message = new_text_message(text, role=ROLE_USER)
        if call_id is not None:
            message.message_id = call_id
        final: Task | None = None
        async for response in client.send_message(SendMessageRequest(message=message)):
            if response.HasField("message"):
                return _text(response.message.parts) or _fail("answered with an empty message")
            if response.HasField("task"):
                final = response.task
        if final is None:
            raise RemoteFailure("answered with neither a task nor a message")
        task = final
        while not _ended(task):
            await asyncio.sleep(POLL_S)
            task = await client.get_task(GetTaskRequest(id=task.id))
        return _task_answer(task)

    async def _client(self) -> Client:
        from a2a.client import ClientConfig, ClientFactory

        loop = id(asyncio.get_running_loop())
        async with self._lock:
            found = self._clients.get(loop)
            if found is not None:
                return found[1]
            headers = {"Authorization": f"Bearer {self.agent.token}"} if self.agent.token else {}
            http = httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(self.agent.timeout_s,
                                                                            connect=CARD_TIMEOUT_S))
            try:
                # Non-streaming: one answer, then tasks/get; the toolbox wants only the final text.
                factory = ClientFactory(ClientConfig(streaming=False, httpx_client=http))
                client = await factory.create_from_url(self.agent.url)
            except BaseException:
                await http.aclose()
                raise
            self._clients[loop] = (http, client)
            return client

    async def aclose(self) -> None:
        """Close this event loop's connection to the remote agent."""
        found = self._clients.pop(id(asyncio.get_running_loop()), None)
        if found is not None:
            await found[1].close()
            await found[0].aclose()


def remote_agent_tools(agents: Sequence[RemoteAgent], *, observe: Observer | None = None) -> list[Tool]:
    """One ``ask_<name>`` tool per remote agent."""
    return [AskRemoteAgent(a, observe=observe) for a in agents]


def _transport_errors() -> tuple[type[BaseException], ...]:
    from a2a.utils.errors import A2AError
    from google.protobuf.json_format import Error as ProtoJsonError

    # ValueError: no transport of the card is one the client speaks.
    return (A2AError, httpx.HTTPError, ProtoJsonError, ValueError)


def _ended(task: Task) -> bool:
    from a2a.types.a2a_pb2 import (
        TASK_STATE_AUTH_REQUIRED,
        TASK_STATE_CANCELED,
        TASK_STATE_COMPLETED,
        TASK_STATE_FAILED,
        TASK_STATE_INPUT_REQUIRED,
        TASK_STATE_REJECTED,
    )

    # input-required and auth-required wait for someone else: to this tool, the call is over.
    return task.status.state in (TASK_STATE_COMPLETED, TASK_STATE_FAILED, TASK_STATE_CANCELED, TASK_STATE_REJECTED,
                                 TASK_STATE_INPUT_REQUIRED, TASK_STATE_AUTH_REQUIRED)


def _task_answer(task: Task) -> str:
    from a2a.types.a2a_pb2 import TASK_STATE_COMPLETED, TaskState

    said = _text(task.status.message.parts) if task.status.HasField("message") else ""
    if task.status.state != TASK_STATE_COMPLETED:
        state = TaskState.Name(task.status.state).removeprefix("TASK_STATE_").lower()
        raise RemoteFailure(f"ended its task {state}" + (f": {said}" if said else ""))
    answer = "\n".join(t for t in (_text(a.parts) for a in task.artifacts) if t) or said
    return answer or _fail("completed its task without a text answer")


def _text(parts: Sequence[Any]) -> str:
    """The text of the parts: text parts as they are, data parts as JSON; files are named, not fetched."""
    from google.protobuf.json_format import MessageToJson

    out = []
    for part in parts:
        kind = part.WhichOneof("content")
        if kind == "text":
            out.append(part.text)
        elif kind == "data":
            out.append(MessageToJson(part.data, indent=None))
        elif kind in ("url", "raw"):
            out.append(f"[a file{': ' + part.filename if part.filename else ''} ({part.media_type or 'unknown type'})]")
    return "\n".join(out)


def _fail(why: str) -> str:
    raise RemoteFailure(why)
