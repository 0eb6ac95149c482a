"""Each role (and the whole deployment) as an A2A agent, served with the official ``a2a-sdk``.

    GET  /.well-known/agent-card.json              the deployment's card (a skill per role)
    GET  /a2a/{role}/.well-known/agent-card.json   one role's card
    POST /v1/a2a                                   JSON-RPC for the deployment (metadata 'role' picks one)
    POST /v1/a2a/{role}                            JSON-RPC for one role

Kafka is the transport behind it: ``message/send`` produces a Task on the tasks topic (acks=all),
like ``POST /v1/tasks``, and waits on the API's live view for its result; ``message/stream`` answers
with server-sent events as the task is picked up, its tokens arrive and its result lands;
``tasks/get`` reads the live view; ``tasks/cancel`` sends the Control event ``POST
/v1/tasks/{id}/cancel`` sends. The v1.0 method names (SendMessage, …) and v0.3's (message/send, …) are
both served. Credentials and RBAC are the REST API's: the JSON-RPC paths are under /v1, so the
authentication middleware has run, and each method checks its permission and the project.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

from a2a.server.context import ServerCallContext
from a2a.server.events.event_queue import Event
from a2a.server.request_handlers.request_handler import RequestHandler
from a2a.server.request_handlers.response_helpers import agent_card_to_dict
from a2a.server.routes import DefaultServerCallContextBuilder, create_jsonrpc_routes
from a2a.types.a2a_pb2 import (
    TASK_STATE_WORKING,
    AgentCard,
    Artifact,
    CancelTaskRequest,
    DeleteTaskPushNotificationConfigRequest,
    GetExtendedAgentCardRequest,
    GetTaskPushNotificationConfigRequest,
    GetTaskRequest,
    ListTaskPushNotificationConfigsRequest,
    ListTaskPushNotificationConfigsResponse,
    ListTasksRequest,
    ListTasksResponse,
    Message,
    Part,
    SendMessageRequest,
    SubscribeToTaskRequest,
    Task,
    TaskArtifactUpdateEvent,
    TaskPushNotificationConfig,
    TaskStatus,
    TaskStatusUpdateEvent,
)
from a2a.utils.constants import VERSION_HEADER
from a2a.utils.errors import (
    A2AError,
    InvalidParamsError,
    InvalidRequestError,
    TaskNotCancelableError,
    TaskNotFoundError,
    UnsupportedOperationError,
)
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from starlette.datastructures import Headers
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as ASGIMessage

from aios.api.a2a_tasks import (
    LIVE,
    TERMINAL,
    Submission,
    TaskView,
    a2a_state,
    agent_message,
    deployment_card,
    read_message,
    role_card,
    state_name,
    struct_dict,
    to_task,
)
from aios.api.auth import ENDED
from aios.api.metrics import A2A_REPEATS, A2A_REQUESTS
from aios.api.principal import Principal
from aios.api.rbac import Permission, allowed
from aios.api.services import Services
from aios.api.stream import Client
from aios.api.view import LiveEvent, TaskRecord
from aios.schemas.errors import SchemaError
from aios.streams.readmodels.task_client import build_task

WATCHED = frozenset({"tasks", "attempts", "results", "tokens"})
CANCEL_WAIT_S = 10.0  # how long tasks/cancel waits to answer with the task cancelled
KNOWN_WAIT_S = 5.0  # how long an immediate message/send waits for the live view to hold its task


class PrincipalContext(DefaultServerCallContextBuilder):
    """The SDK's call context, with the principal the auth middleware established and the role of
    the path (None on the deployment's endpoint)."""

    def build(self, request: Request) -> ServerCallContext:
        context = super().build(request)
        context.state["principal"] = getattr(request.state, "principal", None)
        context.state["role"] = request.path_params.get("role")
        return context


def _who(context: ServerCallContext, permission: Permission) -> Principal:
    principal = context.state.get("principal")
    if not isinstance(principal, Principal):  # the middleware runs first on /v1: a wiring bug
        raise InvalidRequestError("authentication required: send 'Authorization: Bearer <API key or token>'")
    if not allowed(principal, permission):
        raise InvalidRequestError(f"role {principal.role.value!r} may not {permission.value}; "
                                  "ask an admin for a key with a role that may")
    return principal


def _view(rec: TaskRecord) -> TaskView:
    output = rec.result.get("output") if rec.result is not None else None
    return TaskView(rec.task_id, rec.project_id, rec.role, rec.description, rec.state, rec.attempts,
                    rec.reason, output, rec.sealed)


class _Watch:
    """One task's events from the live view, as they arrive: registered with the hub before the task
    is produced, so none is missed. Its queue is bounded; once it overflows, the watch only wakes
    the caller, who reads the task's state from the view (tokens past that point are not streamed)."""

    def __init__(self, services: Services, principal: Principal, project: str, task_id: str) -> None:
        self.services = services
        self.client = Client(principal, project, WATCHED, asyncio.Queue(services.settings.api.ws_queue), task=task_id)

    def __enter__(self) -> _Watch:
        self.services.hub.clients.add(self.client)
        return self

    def __exit__(self, *_: object) -> None:
        self.services.hub.clients.discard(self.client)

    async def next(self, timeout_s: float) -> LiveEvent | None:
        """The next event, or None after ``timeout_s`` (or at once, the queue having overflowed)."""
        if self.client.overflowed.is_set() and self.client.queue.empty():
            await asyncio.sleep(min(timeout_s, 0.5))
            return None
        try:
            return await asyncio.wait_for(self.client.queue.get(), timeout_s)
        except TimeoutError:
            return None


class AiosRequestHandler(RequestHandler):
    """The A2A methods on AIOS's Kafka topics and live view."""

    def __init__(self, services: Services) -> None:
        self.services = services

    # -- helpers ---------------------------------------------------------------------------------
    def _find(self, task_id: str, who: Principal) -> TaskView:
        rec = self.services.view.find_task(task_id, who.sees)
        if rec is None:  # another project's task is as unknown as a task that does not exist
            raise TaskNotFoundError(f"no task {task_id!r} is known (yet); a task just submitted appears within a second")
        return _view(rec)

    def _current(self, project: str, task_id: str, fallback: TaskView) -> TaskView:
        rec = self.services.view.find_task(task_id, lambda p: p == project)
        return fallback if rec is None else _view(rec)

    async def _submit(self, params: SendMessageRequest, context: ServerCallContext) -> tuple[Principal, TaskView]:
        who = _who(context, Permission.SUBMIT)
        roles = self.services.settings.processing.roles
        ask: Submission = read_message(params.message, _metadata(params), role=context.state.get("role"),
                                       roles=roles, default_role=roles[0])
        if not who.sees(ask.project):
            raise InvalidRequestError(f"this credential is not for project {ask.project!r}")
        task_id = message_task_id(who, ask.project, params.message.message_id) if params.message.message_id else None
        known = None if task_id is None else self.services.view.find_task(task_id, lambda p: p == ask.project)
        if known is not None:  # the same message sent again (a retry, a replayed caller): the same task
            A2A_REPEATS.inc()
            return who, _view(known)
        try:
            task = build_task(ask.description, role=ask.role, project=ask.project, priority=ask.priority,
                              privacy=ask.privacy, submitted_by="a2a", task_id=task_id)
        except SchemaError as exc:
            raise InvalidParamsError(str(exc)) from exc
        svc = self.services
        await svc.produce(svc.topics.tasks, "Task", svc.sealer.seal_task(task), ask.project)
        return who, TaskView(task["task_id"], ask.project, ask.role, ask.description, "submitted")

    async def _until_ended(self, watch: _Watch, view: TaskView, wait_s: float, *, known: bool = False) -> TaskView:
        """The task once it has ended (with ``known``: once the view holds it), or after ``wait_s``."""
        deadline, project = time.monotonic() + wait_s, view.project_id
        while True:
            rec = self.services.view.find_task(view.task_id, lambda p: p == project)
            view = view if rec is None else _view(rec)
            left = deadline - time.monotonic()
            if (rec is not None and known) or view.state in TERMINAL or left <= 0:
                return view
            await watch.next(left)

    # -- the methods -----------------------------------------------------------------------------
    async def on_message_send(self, params: SendMessageRequest, context: ServerCallContext) -> Task | Message:
        async with _counted("message/send"):
            who, view = await self._submit(params, context)
            # Watched from after the produce: what happened before is in the view, read first. Even
            # an immediate answer waits (briefly) for the view to hold the task, so the caller's next
            # tasks/get or tasks/cancel finds it.
            immediately = params.configuration.return_immediately
            wait_s = min(KNOWN_WAIT_S, self.services.settings.api.a2a_wait_s) if immediately else \
                self.services.settings.api.a2a_wait_s
            with _Watch(self.services, who, view.project_id, view.task_id) as watch:
                view = await self._until_ended(watch, view, wait_s, known=immediately)
            return to_task(view)

    async def on_message_send_stream(self, params: SendMessageRequest,
                                     context: ServerCallContext) -> AsyncGenerator[Event, None]:
        async with _counted("message/stream"):
            who, view = await self._submit(params, context)
        with _Watch(self.services, who, view.project_id, view.task_id) as watch:
            async for event in self._follow(watch, view):
                yield event

    async def on_subscribe_to_task(self, params: SubscribeToTaskRequest,
                                   context: ServerCallContext) -> AsyncGenerator[Event, None]:
        async with _counted("tasks/resubscribe"):
            who = _who(context, Permission.READ)
            view = self._find(params.id, who)
        with _Watch(self.services, who, view.project_id, view.task_id) as watch:
            async for event in self._follow(watch, view):
                yield event

    async def _ended_credential(self, who: Principal) -> str | None:
        """Why ``who``'s credential stopped being valid (a key of ENDED), or None while it is valid."""
        if who.expires_at is not None and who.expires_at <= time.time():
            return "expired"
        if who.via == "key":
            try:
                record = await self.services.keys.store.get(who.subject)
            except RedisError:
                return None  # a Redis blip is no reason to end a stream: checked again next round
            if record is None or record.revoked:
                return "revoked"
        return None

    async def _follow(self, watch: _Watch, first: TaskView) -> AsyncIterator[Event]:
        """The task, then its status changes and live tokens, until its result (and then ends). Like
        a WebSocket, the stream ends when its credential does (checked every AIOS_API_WS_RECHECK_S)."""
        view = self._current(first.project_id, first.task_id, first)
        yield to_task(view)
        sent_state = a2a_state(view.state, view.attempts)
        streamed = False
        recheck_s = self.services.settings.api.ws_recheck_s
        checked = time.monotonic()
        while view.state not in TERMINAL:
            event = await watch.next(recheck_s)
            if time.monotonic() - checked >= recheck_s:
                checked = time.monotonic()
                why = await self._ended_credential(watch.client.principal)
                if why is not None:
                    raise InvalidRequestError(f"the stream ended: {ENDED[why]}")
            view = self._current(view.project_id, view.task_id, view)
            if event is not None and event.type == "tokens" and event.data.get("text"):
                yield TaskArtifactUpdateEvent(
                    task_id=view.task_id, context_id=view.project_id, append=streamed,
                    artifact=Artifact(artifact_id=LIVE, name=LIVE, parts=[Part(text=event.data["text"])]))
                streamed = True
            state = a2a_state(view.state, view.attempts)
            if event is not None and event.type == "attempts" and event.data.get("status") == "started":
                state = TASK_STATE_WORKING
            if state != sent_state and view.state not in TERMINAL:
                sent_state = state
                yield TaskStatusUpdateEvent(task_id=view.task_id, context_id=view.project_id,
                                            status=TaskStatus(state=state))  # type: ignore[arg-type]
        final = to_task(view, history=False)
        for artifact in final.artifacts:
            yield TaskArtifactUpdateEvent(task_id=view.task_id, context_id=view.project_id, artifact=artifact,
                                          last_chunk=True)
        yield TaskStatusUpdateEvent(task_id=view.task_id, context_id=view.project_id, status=final.status,
                                    metadata=final.metadata)

    async def on_get_task(self, params: GetTaskRequest, context: ServerCallContext) -> Task | None:
        async with _counted("tasks/get"):
            view = self._find(params.id, _who(context, Permission.READ))
            return to_task(view, history=params.history_length != 0 if params.HasField("history_length") else True)

    async def on_cancel_task(self, params: CancelTaskRequest, context: ServerCallContext) -> Task | None:
        async with _counted("tasks/cancel"):
            who = _who(context, Permission.CONTROL)
            view = self._find(params.id, who)
            if view.state in TERMINAL:
                raise TaskNotCancelableError(
                    f"task {params.id!r} has ended ({state_name(a2a_state(view.state, view.attempts))})")
            await self.services.control(view.project_id, "cancel", view.task_id, "cancelled through A2A",
                                        f"a2a:{who.via}:{who.subject}")
            with _Watch(self.services, who, view.project_id, view.task_id) as watch:
                view = await self._until_ended(watch, view, min(CANCEL_WAIT_S, self.services.settings.api.a2a_wait_s))
            task = to_task(view)
            if view.state not in TERMINAL:  # the cancel is on its way: say so rather than look ignored
                task.status.message.CopyFrom(agent_message(view, "cancel requested; the task stops shortly"))
            return task

    async def on_list_tasks(self, params: ListTasksRequest, context: ServerCallContext) -> ListTasksResponse:
        raise UnsupportedOperationError("tasks/list is not served; GET /v1/projects/{id} lists a project's tasks")

    async def on_create_task_push_notification_config(
            self, params: TaskPushNotificationConfig, context: ServerCallContext) -> TaskPushNotificationConfig:
        raise _no_push()

    async def on_get_task_push_notification_config(
            self, params: GetTaskPushNotificationConfigRequest,
            context: ServerCallContext) -> TaskPushNotificationConfig:
        raise _no_push()

    async def on_list_task_push_notification_configs(
            self, params: ListTaskPushNotificationConfigsRequest,
            context: ServerCallContext) -> ListTaskPushNotificationConfigsResponse:
        raise _no_push()

    async def on_delete_task_push_notification_config(
            self, params: DeleteTaskPushNotificationConfigRequest, context: ServerCallContext) -> None:
        raise _no_push()

    async def on_get_extended_agent_card(self, params: GetExtendedAgentCardRequest,
                                         context: ServerCallContext) -> AgentCard:
        raise UnsupportedOperationError("there is no extended card: the public card says everything")


def message_task_id(who: Principal, project: str, message_id: str) -> str:
    """The task id of a message: the same for the same message id from the same caller into the same
    project, so a message sent again finds its task instead of making another."""
    digest = hashlib.sha256("\0".join((who.via, who.subject, project, message_id)).encode()).hexdigest()
    return f"a2a-{digest[:32]}"


def _no_push() -> A2AError:
    from a2a.utils.errors import PushNotificationNotSupportedError

    return PushNotificationNotSupportedError("push notifications are not served; use message/stream or tasks/get")


def _metadata(params: SendMessageRequest) -> dict[str, Any]:
    return struct_dict(params.metadata, "the request's metadata")


@contextlib.asynccontextmanager
async def _counted(method: str) -> AsyncIterator[None]:
    try:
        yield
    except A2AError as exc:
        A2A_REQUESTS.labels(method, type(exc).__name__).inc()
        raise
    A2A_REQUESTS.labels(method, "ok").inc()


# A v0.3 method name has a slash (message/send, tasks/get); v1.0's do not (SendMessage, GetTask).
V1_NAMES = {"message/send": "SendMessage", "message/stream": "SendStreamingMessage", "tasks/get": "GetTask",
            "tasks/cancel": "CancelTask", "tasks/resubscribe": "SubscribeToTask"}


def version_guard(app: ASGIApp) -> ASGIApp:
    """Refuse a v0.3 method sent with an ``A2A-Version`` of 1 or later, with the method to use.

    The SDK's v0.3 adapter reports that mismatch as an internal error (-32603: v0.3 had no code for
    it), which tells a client nothing it can fix; v1.0's VersionNotSupported (-32009) does. Only
    requests that declare a version of 1 or later are buffered (the body limit bounds them)."""

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        version = Headers(scope=scope).get(VERSION_HEADER, "")
        major = version.split(".", 1)[0]
        if scope["type"] != "http" or not major.isdigit() or int(major) < 1:
            await app(scope, receive, send)
            return
        received: list[ASGIMessage] = []
        while True:
            message = await receive()
            received.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        body = b"".join(m.get("body", b"") for m in received if m["type"] == "http.request")
        method, request_id = _method_and_id(body)
        if method is not None and "/" in method:
            use = V1_NAMES.get(method)
            hint = f"use {use}" if use else "use its v1.0 name"
            await JSONResponse({"jsonrpc": "2.0", "id": request_id, "error": {
                "code": -32009, "message": f"{method!r} is an A2A v0.3 method, and this request says A2A-Version "
                                           f"{version}: {hint}, or send A2A-Version: 0.3"}})(scope, receive, send)
            return
        replay = iter(received)

        async def again() -> ASGIMessage:
            return next(replay, None) or await receive()

        await app(scope, again, send)

    return guarded


def _method_and_id(body: bytes) -> tuple[str | None, str | int | None]:
    try:
        request = json.loads(body)
    except ValueError:
        return None, None  # not JSON: the SDK answers with its parse error
    if not isinstance(request, dict) or not isinstance(request.get("method"), str):
        return None, None
    request_id = request.get("id")
    return request["method"], request_id if isinstance(request_id, str | int) and not isinstance(request_id, bool) else None


def mount_a2a(app: FastAPI, services: Services) -> None:
    """Add the cards and the JSON-RPC endpoints to ``app``."""
    settings = services.settings
    roles = settings.processing.roles
    handler = AiosRequestHandler(services)

    def base_url(request: Request) -> str:
        return (settings.api.a2a_url or str(request.base_url)).rstrip("/")

    def serve(make: Callable[[Request], AgentCard]) -> Callable[[Request], Awaitable[JSONResponse]]:
        async def card(request: Request) -> JSONResponse:
            return JSONResponse(agent_card_to_dict(make(request)))
        return card

    async def unknown_role(request: Request) -> JSONResponse:
        role = request.path_params["role"]
        if role in roles:
            return await serve(lambda r: role_card(base_url(r), role))(request)
        return JSONResponse({"detail": f"unknown role {role!r}; this deployment runs: {', '.join(roles)}"},
                            status_code=404)

    app.add_api_route("/.well-known/agent-card.json", serve(lambda r: deployment_card(base_url(r), roles)),
                      methods=["GET"], include_in_schema=False)
    app.add_api_route("/a2a/{role}/.well-known/agent-card.json", unknown_role, methods=["GET"],
                      include_in_schema=False)
    routes: list[BaseRoute] = []
    for path in ("/v1/a2a", "/v1/a2a/{role}"):
        routes += create_jsonrpc_routes(handler, path, context_builder=PrincipalContext(), enable_v0_3_compat=True)
    for route in routes:
        if isinstance(route, Route):
            route.app = version_guard(route.app)
    app.router.routes.extend(routes)
    app.state.a2a_roles = roles
