"""What the API's routes use, built once per process from settings: producer, live view, Redis, store."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from aios.api.auth import Authenticator
from aios.api.jwt_auth import JwtVerifier
from aios.api.kafka_live import KafkaMonitor
from aios.api.keys import ApiKeys
from aios.api.producer import AsyncProducer
from aios.api.ratelimit import RateLimiter
from aios.api.stream import Hub
from aios.api.view import LiveView
from aios.connectors.context.keys import KeyStore
from aios.connectors.context.ratelimit import TokenBuckets
from aios.connectors.history import HistoryStore, open_store
from aios.schemas.events import envelope
from aios.schemas.limits import MAX_NAME_CHARS, cut
from aios.streams.kafka_access import check_access
from aios.streams.logs import LIBRDKAFKA
from aios.streams.sealing import Sealer
from aios.streams.settings import Settings
from aios.streams.topics import Topics

StoreFactory = Callable[[], HistoryStore]
REDIS_CONNECTIONS = 64


class Services:
    """Opened by :meth:`start` (the app's lifespan) and closed by :meth:`close`."""

    def __init__(self, settings: Settings, store: StoreFactory | None = None) -> None:
        self.settings = settings
        self.topics = Topics.from_settings(settings)
        self._owns_store = store is None
        self._store_factory = store or (lambda: open_store(settings.stores.clickhouse_url, settings.stores.data_dir,
                                                           ttl_days=settings.stores.history_ttl_days))
        self._store: HistoryStore | None = None
        # chdb sessions are not safe to use from several threads at once.
        self._store_lock = threading.Lock()
        self.producer: AsyncProducer | None = None
        self.sealer = Sealer.from_settings(settings)  # restricted content: sealed on submit, opened to read
        self.view = LiveView(settings, sealer=self.sealer)
        self.hub = Hub(self.view)
        self.kafka = KafkaMonitor(settings)  # topics, offsets and lag for the dashboard's Kafka view
        # A bounded pool that makes a request wait for a free connection, instead of failing once
        # every connection is busy (the default pool raises MaxConnectionsError under load).
        self.redis: aioredis.Redis = aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool.from_url(
            settings.stores.redis_url, max_connections=REDIS_CONNECTIONS, timeout=5, socket_timeout=5))
        self.keys = ApiKeys(KeyStore(self.redis, settings.kafka.topic_prefix))
        self.limiter = RateLimiter(TokenBuckets(self.redis, settings.kafka.topic_prefix, settings.api.rate_per_s,
                                                settings.api.rate_burst))
        self.auth = Authenticator(self.keys, JwtVerifier(settings) if settings.api.jwks_url else None, self.limiter)
        admin: dict[str, Any] = {"bootstrap.servers": settings.kafka.bootstrap, "socket.timeout.ms": 5000,
                                 "logger": LIBRDKAFKA, **settings.kafka.security()}
        self._admin = AdminClient(admin)

    async def start(self) -> None:
        # A refused login or an untrusted certificate stops the API at start, naming the setting.
        await asyncio.to_thread(check_access, self.settings)
        self.producer = AsyncProducer(self.settings)
        self.hub.start()
        await asyncio.to_thread(self.view.start)
        self.kafka.start()

    async def close(self) -> None:
        self.hub.stop()
        await asyncio.to_thread(self.kafka.close)
        await asyncio.to_thread(self.view.close)
        if self.producer is not None:
            await asyncio.to_thread(self.producer.close)
        await self.redis.aclose()
        if self._owns_store and self._store is not None:
            await asyncio.to_thread(self._store.close)

    # -- producing ------------------------------------------------------------------------------
    async def produce(self, topic: str, record: str, value: dict[str, Any], key: str) -> tuple[int, int]:
        assert self.producer is not None, "Services.start() was not awaited"  # noqa: S101 - programming error
        return await self.producer.send(topic, record, value, key)

    async def control(self, project: str, action: str, task_id: str, reason: str, by: str) -> None:
        event = {**envelope(), "project_id": project, "action": action, "task_id": task_id,
                 "reason": reason, "requested_by": cut(by, MAX_NAME_CHARS)}  # a JWT subject can be long
        await self.produce(self.topics.control, "Control", event, project)

    # -- the store ------------------------------------------------------------------------------
    def _with_store(self, call: Callable[[HistoryStore], Any]) -> Any:
        with self._store_lock:
            if self._store is None:
                self._store = self._store_factory()
            return call(self._store)

    async def with_store(self, call: Callable[[HistoryStore], Any]) -> Any:
        return await asyncio.to_thread(self._with_store, call)

    # -- readiness ------------------------------------------------------------------------------
    async def checks(self) -> dict[str, str]:
        """'ok' or the reason, for Kafka, Redis, the history store and the live view."""
        out: dict[str, str] = {}
        try:
            await asyncio.to_thread(self._admin.list_topics, self.topics.tasks, timeout=3)
            out["kafka"] = "ok"
        except KafkaException as exc:
            out["kafka"] = f"unreachable: {exc}"
        try:
            await self.redis.ping()
            out["redis"] = "ok"
        except (aioredis.RedisError, OSError) as exc:
            out["redis"] = f"unreachable: {exc}"
        try:
            await self.with_store(lambda store: store.query("SELECT 1 AS ok"))
            out["store"] = "ok"
        except Exception as exc:  # any store failure makes the API not ready; the reason is reported
            out["store"] = f"unavailable: {type(exc).__name__}: {exc}"
        if self.view.error is not None:
            out["view"] = f"stopped: {self.view.error}"
        elif not self.view.caught_up.is_set():
            out["view"] = "catching up"
        else:
            out["view"] = "ok"
        return out
