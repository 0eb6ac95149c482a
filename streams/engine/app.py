"""Builds the Faust app for a set of registered processors and runs it inside the caller's event loop.

Runtime model 1 of 3, the faust agent (``app.agent``): work per record with a few in flight, where
faust's acking (an offset commits once the handler returned and its outputs were flushed) is
enough. The batch and transactional models (``batch.py``, ``transactional.py``) run as services of
the same app; ARCHITECTURE.md says which to choose.

The engine knows no processor by name: callers pass registrations (``streams.pipeline`` does, from
the registry in ``streams.processors``).

``aios worker NAME`` runs one processor as its own consumer group, so each scales on its own over
the topics' partitions; ``aios up`` supervises one such process per processor group.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass

import faust
from prometheus_client import REGISTRY

from aios.schemas.limits import PRODUCER_HEADROOM_BYTES
from aios.streams import tracing
from aios.streams.engine.concurrent import ConcurrentProcessor
from aios.streams.engine.loops import loop_factory
from aios.streams.engine.runtime import Runtime
from aios.streams.engine.transactional import TransactionalProcessor
from aios.streams.errors import OrchestrationError
from aios.streams.kafka_access import check_access, tls_context
from aios.streams.lag import ConsumerLag, watch
from aios.streams.metrics import serve
from aios.streams.settings import Settings

EMBEDDED = "embedded"


def group_id(settings: Settings, name: str) -> str:
    return f"{settings.kafka.topic_prefix}-{name}"


Register = Callable[[faust.App, Runtime], None]
"""Adds one processor to an app: faust agents on the app, services on the runtime."""


def faust_credentials(settings: Settings) -> faust.SASLCredentials | faust.SSLCredentials | None:
    """The same Kafka security settings the confluent-kafka clients get, in faust's (aiokafka's) form."""
    protocol = settings.kafka.security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = tls_context(settings.kafka) if protocol.endswith("SSL") else None
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    password = settings.kafka.sasl_password
    return faust.SASLCredentials(
        username=settings.kafka.sasl_username,
        password=password.get_secret_value() if password is not None else None,
        ssl_context=context, mechanism=settings.kafka.sasl_mechanism or "PLAIN")


def build_app(settings: Settings, processors: Sequence[Register], name: str) -> tuple[faust.App, Runtime]:
    datadir = settings.stores.data_dir / "faust" / name
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        group_id(settings, name),
        broker=[f"kafka://{server}" for server in settings.kafka.bootstrap.split(",")],
        broker_credentials=faust_credentials(settings),
        value_serializer="raw",
        key_serializer="raw",
        # Topics are created by `aios topics create`; the broker has auto-create off.
        topic_allow_declare=False,
        topic_disable_leader=True,
        autodiscover=False,
        web_enabled=False,
        store="memory://",
        datadir=str(datadir),
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger_ms=1,
        # Above what the codec lets through (AIOS_MAX_MESSAGE_BYTES), as for the confluent-kafka clients.
        producer_max_request_size=settings.kafka.max_message_bytes + PRODUCER_HEADROOM_BYTES,
        broker_commit_interval=settings.processing.commit_interval_s,
        # A SIGKILLed member holds its partitions until its session expires (faust's default: 60 s).
        broker_session_timeout=settings.kafka.session_timeout_s,
        broker_heartbeat_interval=settings.kafka.session_timeout_s / 4,
        stream_wait_empty=False,
        logging_config=None,
    )
    rt = Runtime(settings)
    for register in processors:
        register(app, rt)
    return app, rt


@dataclass
class RunningApp:
    app: faust.App
    runtime: Runtime

    def check(self) -> None:
        """Raise if a faust service crashed: a dead fetcher would otherwise idle silently."""
        services = [*self.runtime.services]
        if self.app.agents:
            services += [self.app, self.app._fetcher, self.app.consumer, self.app.producer]
        for service in services:
            if service.crashed:
                reason = getattr(service, "_crash_reason", None)
                raise OrchestrationError(f"{service.shortlabel} crashed: {reason!r}")


async def _wait_assigned(app: faust.App, timeout_s: float) -> None:
    """Wait until the consumer group has given this member its partitions."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if app.consumer.assignment():
            return
        await asyncio.sleep(0.05)
    raise OrchestrationError(f"no partitions assigned within {timeout_s:.0f}s; is Kafka up and are the topics created?")


def consumed_topics(app: faust.App, rt: Runtime, name: str) -> dict[str, list[str]]:
    """Consumer group -> the topics it reads, for the faust app and each batch consumer."""
    groups: dict[str, list[str]] = {}
    faust_topics = sorted({t for agent in app.agents.values() for t in agent.get_topic_names()})
    if faust_topics:
        groups[group_id(rt.settings, name)] = faust_topics
    for service in rt.services:
        topics = getattr(service, "topics", None)
        if topics:
            groups[group_id(rt.settings, service.name)] = list(topics)
    return groups


@asynccontextmanager
async def running(
    settings: Settings, processors: Sequence[Register], name: str = EMBEDDED, *, ready_timeout_s: float = 60.0
) -> AsyncIterator[RunningApp]:
    """Start the processors in this event loop; stop them (committing offsets) on exit."""
    # Credentials, certificates and the address are checked before any client starts: faust's and
    # librdkafka's clients would otherwise retry a refused login forever.
    await asyncio.to_thread(check_access, settings)
    tracing.configure(settings, name)
    app, rt = build_app(settings, processors, name)
    # A faust app with no agent has no topics to consume and crashes, so a process that only
    # runs services (`aios worker history`) starts them without the app.
    uses_faust = bool(app.agents)
    if uses_faust:
        for service in rt.services:
            app.add_dependency(service)  # started after the app, stopped with it
        app.finalize()
        await app.start()
    else:
        for service in rt.services:
            await service.start()
    groups = consumed_topics(app, rt, name)
    lag = ConsumerLag(settings.kafka.bootstrap, lambda: groups, security=settings.kafka.security())
    unwatch = watch(REGISTRY, lag)
    try:
        if uses_faust:
            await _wait_assigned(app, ready_timeout_s)
        for service in rt.services:
            if isinstance(service, TransactionalProcessor | ConcurrentProcessor):
                await service.wait_assigned(ready_timeout_s)
        yield RunningApp(app, rt)
        # A clean stop drains first (agents finish in-flight tasks); a crash goes straight down.
        for drain in rt.drainers:
            await drain()
    except BaseException:
        for failed in rt.on_failure:
            await failed()
        raise
    finally:
        unwatch()
        if uses_faust:
            await app.stop()
        else:
            for service in rt.services:
                await service.stop()
        await rt.aclose()
        await asyncio.to_thread(tracing.flush)


async def serve_forever(
    settings: Settings, processors: Sequence[Register], name: str, on_ready: Callable[[], None] | None = None,
) -> None:
    """Run until SIGINT/SIGTERM, with /metrics served on AIOS_METRICS_PORT."""
    serve(settings.observability.metrics_port, settings.observability.metrics_host)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with running(settings, processors, name, ready_timeout_s=settings.processing.assign_timeout_s) as live:
        if on_ready is not None:
            on_ready()
        while not stop.is_set() and not live.runtime.stop_requested.is_set():
            live.check()
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)


def run_processors(settings: Settings, processors: Sequence[Register], name: str,
                   on_ready: Callable[[], None] | None = None) -> None:
    """:func:`serve_forever` on the loop AIOS_EVENT_LOOP picks, until SIGINT/SIGTERM."""
    with asyncio.Runner(loop_factory=loop_factory(settings.processing.event_loop)) as runner:
        runner.run(serve_forever(settings, processors, name, on_ready))

