"""A remote A2A agent for the tests, built with the official a2a-sdk server (its DefaultRequestHandler,
an in-memory task store, JSON-RPC and card routes) and served by uvicorn in a thread on a free port.

It counts the tasks it executes and keeps the message ids it was sent. What it answers is set by
``behaviour``: "echo" completes with "remote: <text>", "fail" fails the task, "slow" answers after
``delay_s``. With ``token``, a request without ``Authorization: Bearer <token>`` gets 401.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import uvicorn
from a2a.helpers.proto_helpers import new_task_from_user_message, new_text_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events.event_queue_v2 import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types.a2a_pb2 import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    Part,
)
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send


class Executor(AgentExecutor):
    def __init__(self, remote: RemoteAgentServer) -> None:
        self.remote = remote

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        remote = self.remote
        with remote.lock:
            remote.calls += 1
            if context.message is not None:
                remote.message_ids.append(context.message.message_id)
        text = context.get_user_input()
        updater = TaskUpdater(event_queue, context.task_id or "", context.context_id or "")
        await event_queue.enqueue_event(context.current_task or new_task_from_user_message(context.message))
        await updater.start_work()
        if remote.behaviour == "slow":
            await asyncio.sleep(remote.delay_s)
        if remote.behaviour == "fail":
            await updater.failed(new_text_message("the remote could not do it", context_id=context.context_id,
                                                  task_id=context.task_id))
            return
        await updater.add_artifact([Part(text=f"remote: {text}")], name="answer")
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        updater = TaskUpdater(event_queue, context.task_id or "", context.context_id or "")
        await updater.cancel()


class _Bearer:
    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith("/.well-known/"):
            headers = dict(scope["headers"])
            if headers.get(b"authorization") != f"Bearer {self.token}".encode():
                await JSONResponse({"detail": "unauthorized"}, status_code=401)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RemoteAgentServer:
    """``with RemoteAgentServer() as remote:`` serves at ``remote.url`` until the block ends."""

    def __init__(self, behaviour: str = "echo", *, delay_s: float = 5.0, token: str | None = None) -> None:
        self.behaviour, self.delay_s, self.token = behaviour, delay_s, token
        self.calls = 0
        self.message_ids: list[str] = []
        self.lock = threading.Lock()
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def card(self) -> AgentCard:
        return AgentCard(
            name="translator", description="Translates text", version="1",
            supported_interfaces=[AgentInterface(url=self.url + "/", protocol_binding="JSONRPC",
                                                 protocol_version="1.0")],
            capabilities=AgentCapabilities(streaming=True), default_input_modes=["text/plain"],
            default_output_modes=["text/plain"],
            skills=[AgentSkill(id="translate", name="translate", description="Translate text", tags=["text"])])

    def app(self) -> Any:
        card = self.card()
        handler = DefaultRequestHandler(Executor(self), InMemoryTaskStore(), card)
        app: Any = Starlette(routes=[*create_agent_card_routes(card), *create_jsonrpc_routes(handler, "/")])
        return _Bearer(app, self.token) if self.token else app

    def __enter__(self) -> RemoteAgentServer:
        config = uvicorn.Config(self.app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="a2a-remote", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the remote A2A agent did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *_: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.should_exit = True
        self._thread.join(timeout=10)
