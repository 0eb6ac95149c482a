"""Broadcasts to the agent workers through the API: drain one or all, reload roles or the LLM config.

They act on the whole deployment, whichever projects its workers serve, so they need an operator
or admin credential for every project ('*').
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, Request
from pydantic import BaseModel, Field

from aios.api.errors import Forbidden
from aios.api.models import Strict
from aios.api.principal import Principal
from aios.api.routes import ERRORS, Operator, known_query, services
from aios.schemas import limits as L
from aios.schemas.limits import MAX_NAME_CHARS, cut
from aios.streams.processors.agent_control import BROADCAST_PROJECT, broadcast_event

workers = APIRouter(prefix="/v1", responses=ERRORS, dependencies=[Depends(known_query)])


class DrainIn(Strict):
    agent_id: str | None = Field(None, max_length=L.MAX_NAME_CHARS,
                                 description="The worker to drain (GET /v1/agents lists them); null drains every one.")
    reason: str = Field("drained through the API", max_length=L.MAX_REASON_CHARS)


class ReloadIn(Strict):
    what: Literal["roles", "llm"] | None = Field(None, description="What to read again; null: roles and the LLM config.")
    reason: str = Field("reloaded through the API", max_length=L.MAX_REASON_CHARS)


class BroadcastAccepted(BaseModel):
    action: Literal["drain", "reload"]
    target: str | None
    event_id: str


def _whole_deployment(who: Principal) -> None:
    if not who.all_projects:
        raise Forbidden("draining or reloading agent workers affects every project: it needs an operator or admin "
                        "credential for every project ('*')")


async def _send(request: Request, who: Principal, action: str, target: str | None, reason: str) -> BroadcastAccepted:
    _whole_deployment(who)
    svc = services(request)
    event = broadcast_event(action, target, reason, cut(f"api:{who.via}:{who.subject}", MAX_NAME_CHARS))
    await svc.produce(svc.topics.control, "Control", event, BROADCAST_PROJECT)
    return BroadcastAccepted(action=action, target=target, event_id=event["event_id"])  # type: ignore[arg-type]


@workers.post("/agents/drain", status_code=202, response_model=BroadcastAccepted)
async def drain(request: Request, body: Annotated[DrainIn, Body()], who: Operator) -> BroadcastAccepted:
    """Drain an agent worker (or every one): it takes no new assignment, finishes those in flight and exits."""
    return await _send(request, who, "drain", body.agent_id, body.reason)


@workers.post("/agents/reload", status_code=202, response_model=BroadcastAccepted)
async def reload(request: Request, body: Annotated[ReloadIn, Body()], who: Operator) -> BroadcastAccepted:
    """Make every agent worker read the roles or the LLM config again (a broken file is refused, the old kept)."""
    return await _send(request, who, "reload", body.what, body.reason)
