"""``/v1/stream``: live events over a WebSocket, filtered by project and type on the server.

The view's thread hands each event to the event loop once; the hub then offers it to every client's
bounded queue without waiting. A client whose queue is full is closed with code 4008 (too slow):
a slow reader never slows the view, the pipeline or the other clients.

Resume: ``from_id`` (an event's id, ``topic:partition:offset``) or ``from_ts`` (milliseconds) replays
from Kafka before going live; events are at-least-once across the switch, so clients dedupe by id.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from aios.api.auth import ENDED, bearer
from aios.api.errors import ApiError
from aios.api.metrics import WS_CLIENTS, WS_DROPPED, WS_REFUSED
from aios.api.principal import Principal
from aios.api.rbac import Permission, allowed
from aios.api.view import LiveEvent, LiveView
from aios.schemas.errors import SchemaError
from aios.schemas.events import event_json, to_ms
from aios.streams.kafka import make_consumer, watermarks
from aios.streams.settings import Settings

TOO_SLOW = 4008
UNAUTHORIZED = 4401  # no valid credential, or it was revoked or expired while connected
FORBIDDEN = 4403
BAD_REQUEST = 4400
TOO_MANY = 4429  # over AIOS_API_WS_PER_KEY connections for this key or token subject
REPLAY_CHUNK = 500

ws_router = APIRouter()


@dataclass(eq=False)  # compared and hashed by identity: the hub keeps a set of them
class Client:
    principal: Principal
    project: str | None
    types: frozenset[str]
    queue: asyncio.Queue[LiveEvent]
    task: str | None = None  # only this task's events (its live tokens, its attempts and result)
    overflowed: asyncio.Event = field(default_factory=asyncio.Event)

    def wants(self, event: LiveEvent) -> bool:
        if event.type not in self.types:
            return False
        if self.task is not None and event.data.get("task_id") != self.task:
            return False
        if event.project_id is None:  # agents: global, their in-flight ids are filtered when sent
            return self.project is None
        if self.project is not None and event.project_id != self.project:
            return False
        return self.principal.sees(event.project_id)


class Hub:
    """Fans the view's events out to the connected clients."""

    def __init__(self, view: LiveView) -> None:
        self.view = view
        self.clients: set[Client] = set()
        self.per_key: dict[tuple[str, str], int] = {}  # (via, subject) -> its open connections
        self.dropped = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unsubscribe: Any = None

    def admit(self, principal: Principal, cap: int) -> bool:
        """Count a connection of ``principal``'s key; False (not counted) when it holds ``cap`` already."""
        key = (principal.via, principal.subject)
        if self.per_key.get(key, 0) >= cap:
            return False
        self.per_key[key] = self.per_key.get(key, 0) + 1
        return True

    def release(self, principal: Principal) -> None:
        key = (principal.via, principal.subject)
        left = self.per_key.get(key, 0) - 1
        if left > 0:
            self.per_key[key] = left
        else:
            self.per_key.pop(key, None)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._unsubscribe = self.view.subscribe(self._from_thread)

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()

    def _from_thread(self, events: list[LiveEvent]) -> None:
        # One hop into the loop per batch the view read, not per event.
        if self._loop is not None and self.clients:
            self._loop.call_soon_threadsafe(self.publish, events)

    def publish(self, events: list[LiveEvent]) -> None:
        for client in list(self.clients):
            for event in events:
                if client.overflowed.is_set():
                    break
                if not client.wants(event):
                    continue
                try:
                    client.queue.put_nowait(event)
                except asyncio.QueueFull:
                    client.overflowed.set()
                    self.dropped += 1
                    WS_DROPPED.inc()


def topic_of(view: LiveView, type_: str) -> str:
    return next(t for t, short in view.short.items() if short == type_)


class Replay:
    """Reads the chosen topics from a start position up to the ends seen when it was created."""

    def __init__(self, settings: Settings, view: LiveView, types: frozenset[str], from_id: str | None,
                 from_ts: int | None) -> None:
        self.view = view
        self.consumer: Consumer = make_consumer(settings, group=f"aios-api-replay-{time.time_ns()}")
        try:
            self.ends, starts = self._positions(types, from_id, from_ts)
        except KafkaException as exc:
            self.consumer.close()
            raise ApiError(f"cannot resume: {exc}") from exc
        self.pending = {tp for tp, end in self.ends.items() if starts[tp] < end}
        self.consumer.assign([TopicPartition(t, p, starts[(t, p)]) for t, p in self.pending])

    def _positions(self, types: frozenset[str], from_id: str | None,
                   from_ts: int | None) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int]]:
        exact: dict[tuple[str, int], int] = {}
        if from_id is not None:
            topic, partition, offset = parse_event_id(from_id)
            if topic not in self.view.short:
                raise ApiError(f"from_id {from_id!r} names no topic this API streams")
            exact[(topic, partition)] = offset + 1
            from_ts = self._timestamp_of(topic, partition, offset)
        meta = self.consumer.list_topics(timeout=10)
        ends: dict[tuple[str, int], int] = {}
        starts: dict[tuple[str, int], int] = {}
        wanted = [TopicPartition(topic_of(self.view, t), p, from_ts or 0)
                  for t in types for p in meta.topics[topic_of(self.view, t)].partitions]
        found = self.consumer.offsets_for_times(wanted, timeout=10)
        for tp in found:
            low, high = watermarks(self.consumer, TopicPartition(tp.topic, tp.partition))
            key = (tp.topic, tp.partition)
            ends[key] = high
            starts[key] = exact.get(key, high if tp.offset < 0 else max(tp.offset, low))
        return ends, starts

    def _timestamp_of(self, topic: str, partition: int, offset: int) -> int:
        self.consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            msg = self.consumer.poll(0.5)
            if msg is not None and msg.error() is None and msg.offset() == offset:
                return int(msg.timestamp()[1])
        raise ApiError(f"event {topic}:{partition}:{offset} is no longer in Kafka; resume with from_ts instead")

    def chunk(self) -> list[LiveEvent]:
        """The next events (empty once every partition reached its end)."""
        out: list[LiveEvent] = []
        deadline = time.monotonic() + 5
        while self.pending and len(out) < REPLAY_CHUNK and time.monotonic() < deadline:
            for msg in self.consumer.consume(REPLAY_CHUNK, 0.2):
                key = (str(msg.topic()), int(msg.partition() or 0))
                offset = int(msg.offset() or 0)
                if msg.error() is not None or key not in self.pending:
                    continue
                if offset + 1 >= self.ends[key]:
                    self.pending.discard(key)
                if offset >= self.ends[key]:
                    continue
                try:
                    v, _ = self.view.reveal(self.view.short[key[0]], self.view.codec.decode(msg.value()).value)
                except SchemaError:
                    continue
                out.append(LiveEvent(f"{key[0]}:{key[1]}:{offset}", self.view.short[key[0]],
                                     v.get("project_id"), to_ms(v["timestamp"]), v))
            if out:
                break
        return out

    def close(self) -> None:
        self.consumer.close()


def parse_event_id(text: str) -> tuple[str, int, int]:
    topic, _, rest = text.partition(":")
    partition, _, offset = rest.partition(":")
    if not (topic and partition.isdigit() and offset.isdigit()):
        raise ApiError(f"from_id {text!r} is not an event id (topic:partition:offset, as sent in 'id')")
    return topic, int(partition), int(offset)


def render(event: LiveEvent, client: Client, view: LiveView) -> str:
    data = event.data
    if event.type == "agents" and not client.principal.all_projects:
        data = {**data, "in_flight": [t for t in data["in_flight"]
                                      if view.find_task(t, client.principal.sees) is not None]}
    return event_json({"id": event.id, "type": event.type, "project_id": event.project_id,
                       "timestamp": event.timestamp_ms, "data": data}).decode()


OPT_IN = frozenset({"tokens"})  # sent only when asked for: a token event per call in flight every 100 ms


def _types(raw: str | None, view: LiveView) -> frozenset[str]:
    known = frozenset(view.short.values())
    if not raw:
        return known - OPT_IN
    asked = frozenset(t.strip() for t in raw.split(",") if t.strip())
    unknown = asked - known
    if unknown:
        raise ApiError(f"unknown event types {', '.join(sorted(unknown))}; choose from {', '.join(sorted(known))}")
    return asked


@ws_router.websocket("/v1/stream")
async def stream(ws: WebSocket) -> None:
    """Query: ``project``, ``task``, ``types`` (comma-separated; ``tokens`` only when named),
    ``from_id`` or ``from_ts``, ``access_token``."""
    services = ws.app.state.services
    hub: Hub = services.hub
    await ws.accept()
    try:
        principal: Principal = await services.auth.authenticate(bearer(ws, allow_query=True))
    except ApiError as exc:
        await ws.close(UNAUTHORIZED if exc.status == 401 else FORBIDDEN, str(exc)[:120])
        return
    q = ws.query_params
    project = q.get("project")
    if not allowed(principal, Permission.READ) or (project is not None and not principal.sees(project)):
        await ws.close(FORBIDDEN, f"this credential may not read project {project!r}"[:120])
        return
    if project is None and not principal.all_projects and len(principal.projects) != 1:
        await ws.close(BAD_REQUEST, "this credential is scoped to projects: add ?project=")
        return
    try:
        types = _types(q.get("types"), services.view)
        from_ts = int(q["from_ts"]) if q.get("from_ts") else None
    except (ApiError, ValueError) as exc:
        await ws.close(BAD_REQUEST, str(exc)[:120])
        return
    cap = services.settings.api.ws_per_key
    if not hub.admit(principal, cap):
        WS_REFUSED.labels("over_cap").inc()
        await ws.close(TOO_MANY, f"this credential already holds {cap} connections (AIOS_API_WS_PER_KEY)")
        return
    client = Client(principal, project or (next(iter(principal.projects)) if not principal.all_projects else None),
                    types, asyncio.Queue(maxsize=services.settings.api.ws_queue), task=q.get("task") or None)
    hub.clients.add(client)  # live events queue up while a replay runs
    WS_CLIENTS.inc()
    try:
        ends: dict[tuple[str, int], int] = {}
        if q.get("from_id") or from_ts is not None:
            ends = await _replay(ws, services, client, q.get("from_id"), from_ts)
        valid = services.auth.until_invalid(principal, services.settings.api.ws_recheck_s)
        await _live(ws, client, services.view, ends, valid)
    except WebSocketDisconnect:
        pass
    except ApiError as exc:
        await ws.close(BAD_REQUEST, str(exc)[:120])
    finally:
        hub.clients.discard(client)
        hub.release(principal)
        WS_CLIENTS.dec()


async def _replay(ws: WebSocket, services: Any, client: Client, from_id: str | None,
                  from_ts: int | None) -> dict[tuple[str, int], int]:
    replay = await asyncio.to_thread(Replay, services.settings, services.view, client.types, from_id, from_ts)
    try:
        while True:
            events = await asyncio.to_thread(replay.chunk)
            if not events:
                return replay.ends
            for event in events:
                if client.wants(event):
                    await ws.send_text(render(event, client, services.view))
    finally:
        await asyncio.to_thread(replay.close)


async def _live(ws: WebSocket, client: Client, view: LiveView, ends: dict[tuple[str, int], int],
                valid: Coroutine[Any, Any, str]) -> None:
    """Send the client's events until it leaves, falls too far behind, or its credential ends."""
    async def send_loop() -> None:
        while True:
            event = await client.queue.get()
            topic, partition, offset = parse_event_id(event.id)
            if offset < ends.get((topic, partition), 0):
                continue  # already sent by the replay
            await ws.send_text(render(event, client, view))

    sender = asyncio.create_task(send_loop())
    receiver = asyncio.create_task(_until_closed(ws))
    overflow = asyncio.create_task(client.overflowed.wait())
    credential = asyncio.create_task(valid)
    try:
        await asyncio.wait({sender, receiver, overflow, credential}, return_when=asyncio.FIRST_COMPLETED)
        if credential.done():
            why = credential.result()
            WS_REFUSED.labels(why).inc()
            sender.cancel()
            await ws.close(UNAUTHORIZED, ENDED[why])
        elif client.overflowed.is_set():
            # The sender may be stuck on a full socket: stop it, and queue the close frame behind
            # what the client has not read yet.
            sender.cancel()
            await ws.close(TOO_SLOW, f"client too slow: more than {client.queue.maxsize} events behind")
        elif sender.done():
            sender.result()  # a send failed: let the caller see why
    finally:
        for task in (sender, receiver, overflow, credential):
            task.cancel()


async def _until_closed(ws: WebSocket) -> None:
    """Read (and ignore) what the client sends, until it disconnects."""
    try:
        while True:
            await ws.receive_text()
    except (WebSocketDisconnect, RuntimeError):
        return
