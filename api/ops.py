"""The operators' routes: the Kafka view (topics, offsets, rates, consumer lag now and over the last
hour, live over a WebSocket) and the dead letters (list and replay).

Both span every project (a topic or a dead letter belongs to no single one), so they need a
credential for every project ('*'): the Kafka view any role that reads, the DLQ an operator or
admin, since a dead letter holds a record's original bytes and a replay writes into live topics.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, WebSocket, WebSocketDisconnect

from aios.api.auth import ENDED, bearer
from aios.api.errors import ApiError, Conflict, Forbidden, NotFound
from aios.api.metrics import WS_REFUSED
from aios.api.ops_models import KafkaOut, LagHistoryOut, LettersOut, ReplayIn, ReplayOut
from aios.api.principal import Principal
from aios.api.rbac import Permission, allowed, require
from aios.api.routes import ERRORS, known_query
from aios.api.services import Services
from aios.api.stream import FORBIDDEN, TOO_MANY, UNAUTHORIZED
from aios.connectors.context.replays import ReplayLedger
from aios.schemas import limits as L
from aios.streams.jobs.dlq_replay import LetterFilter, Replayer, read_letters

ops_router = APIRouter(prefix="/v1", responses=ERRORS, dependencies=[Depends(known_query)])
ops_ws_router = APIRouter()
MAX_LETTERS = 10_000


def _everywhere(permission: Permission) -> Callable[[Request], Awaitable[Principal]]:
    role_check = require(permission)

    async def check(request: Request) -> Principal:
        principal = await role_check(request)
        if not principal.all_projects:
            raise Forbidden("the Kafka view and the DLQ span every project: use a credential for '*'")
        return principal
    return check


KafkaReader = Annotated[Principal, Depends(_everywhere(Permission.READ))]
DlqOperator = Annotated[Principal, Depends(_everywhere(Permission.CONTROL))]


def _services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


@ops_router.get("/kafka", response_model=KafkaOut)
async def kafka_now(request: Request, who: KafkaReader) -> KafkaOut:
    """The latest sample: topics with partitions, end offsets and rates; each group's lag per partition."""
    return KafkaOut.model_validate(_services(request).kafka.snapshot())


@ops_router.get("/kafka/lag", response_model=LagHistoryOut)
async def kafka_lag(request: Request, who: KafkaReader,
                    since_s: Annotated[int | None, Query(ge=1, le=86_400)] = None,
                    group: Annotated[str | None, Query(min_length=1, max_length=L.MAX_ID_CHARS)] = None) -> LagHistoryOut:
    """Lag over the window kept (AIOS_API_KAFKA_HISTORY_S): each group's total, or with ``group`` each
    of its partitions."""
    return LagHistoryOut.model_validate(_services(request).kafka.lag_history(since_s, group))


@ops_router.get("/dlq", response_model=LettersOut)
async def dlq_list(request: Request, who: DlqOperator,
                   since_s: Annotated[int | None, Query(ge=1, le=366 * 86400)] = None,
                   processor: Annotated[str | None, Query(min_length=1, max_length=L.MAX_ID_CHARS)] = None,
                   reason: Annotated[str | None, Query(min_length=1, max_length=L.MAX_REASON_CHARS)] = None,
                   limit: Annotated[int, Query(ge=1, le=MAX_LETTERS)] = 100) -> LettersOut:
    """Dead letters, oldest first (the latest ``limit``), with how often each record was replayed."""
    svc = _services(request)
    where = LetterFilter(None if since_s is None else int((time.time() - since_s) * 1000), processor, reason)
    letters = await asyncio.to_thread(read_letters, svc.settings, where, limit)
    counts = await ReplayLedger(svc.redis, svc.settings.kafka.topic_prefix).counts([x.fingerprint for x in letters])
    return LettersOut.model_validate({"letters": [x.doc(counts[x.fingerprint]) for x in letters],
                                      "replay_limit": svc.settings.observability.dlq_replay_limit})


@ops_router.post("/dlq/replay", response_model=ReplayOut)
async def dlq_replay(request: Request, body: ReplayIn, who: DlqOperator) -> ReplayOut:
    """Send dead letters back to their source topic (or ``to``). A record replayed
    AIOS_DLQ_REPLAY_LIMIT times is refused (its outcome says why); 409 when every letter is refused."""
    svc = _services(request)
    since_ms = None if body.since_s is None else int((time.time() - body.since_s) * 1000)
    where = LetterFilter(since_ms, body.processor, body.reason, frozenset(body.ids or ()))
    letters = await asyncio.to_thread(read_letters, svc.settings, where, MAX_LETTERS)
    missing = sorted(set(body.ids or ()) - {x.event_id for x in letters})
    if missing:
        raise NotFound(f"no dead letter with id {', '.join(missing[:10])} on the DLQ; see GET /v1/dlq")
    replayer = Replayer(svc.settings, ReplayLedger(svc.redis, svc.settings.kafka.topic_prefix), by=who.subject)
    try:
        outcomes = await replayer.replay(letters, body.to, body.dry_run)
    finally:
        await asyncio.to_thread(replayer.close)
    doc = ReplayOut.model_validate({"dry_run": body.dry_run, "outcomes": [o.doc() for o in outcomes],
                                    "replay_limit": svc.settings.observability.dlq_replay_limit})
    if outcomes and all(o.outcome == "refused" for o in outcomes):
        raise Conflict(f"every letter was refused: {outcomes[0].reason}")
    return doc


@ops_ws_router.websocket("/v1/kafka/stream")
async def kafka_stream(ws: WebSocket) -> None:
    """Each new sample of the Kafka view, as :func:`kafka_now` answers it. Query: ``access_token``."""
    svc: Services = ws.app.state.services
    await ws.accept()
    try:
        principal = await svc.auth.authenticate(bearer(ws, allow_query=True))
    except ApiError as exc:
        await ws.close(UNAUTHORIZED if exc.status == 401 else FORBIDDEN, str(exc)[:120])
        return
    if not allowed(principal, Permission.READ) or not principal.all_projects:
        await ws.close(FORBIDDEN, "the Kafka view spans every project: use a credential for '*'")
        return
    cap = svc.settings.api.ws_per_key
    if not svc.hub.admit(principal, cap):  # one cap for all of a key's WebSockets
        WS_REFUSED.labels("over_cap").inc()
        await ws.close(TOO_MANY, f"this credential already holds {cap} connections (AIOS_API_WS_PER_KEY)")
        return
    receiver = asyncio.create_task(_until_closed(ws))
    credential = asyncio.create_task(svc.auth.until_invalid(principal, svc.settings.api.ws_recheck_s))
    try:
        seen = -1
        while not receiver.done() and not credential.done():
            seq = await svc.kafka.next_sample(seen, timeout_s=1.0)
            if seq != seen:
                seen = seq
                await ws.send_text(KafkaOut.model_validate(svc.kafka.snapshot()).model_dump_json())
        if credential.done():
            why = credential.result()
            WS_REFUSED.labels(why).inc()
            await ws.close(UNAUTHORIZED, ENDED[why])
    except (WebSocketDisconnect, RuntimeError):  # the client left while a sample was being sent
        pass
    finally:
        receiver.cancel()
        credential.cancel()
        svc.hub.release(principal)


async def _until_closed(ws: WebSocket) -> None:
    try:
        while True:
            await ws.receive_text()
    except (WebSocketDisconnect, RuntimeError):
        return
