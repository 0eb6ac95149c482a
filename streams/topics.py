"""Every AIOS topic, named from the prefix, and its explicit creation (auto-create stays off)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError as CKafkaError
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from aios.schemas.errors import ConfigError
from aios.schemas.limits import PRODUCER_HEADROOM_BYTES
from aios.streams.errors import KafkaError
from aios.streams.kafka_access import authorization_problem, check_access
from aios.streams.logs import LIBRDKAFKA
from aios.streams.settings import Settings


@dataclass(frozen=True)
class TopicSpec:
    """What a topic carries and how it is created."""

    name: str
    record: str  # Avro record name (DeadLetter on the DLQ, ...)
    key: str  # what the key is, for docs and `topics list`
    partitions: int
    replication: int
    config: dict[str, str] = field(default_factory=dict)


TOKEN_RETENTION_MS = 3_600_000


class Topics:
    """Topic names for one prefix. Role topics are ``<prefix>.agent.<role>``."""

    def __init__(self, prefix: str, roles: tuple[str, ...]) -> None:
        self.prefix = prefix
        self.roles = roles
        self.tasks = f"{prefix}.tasks"
        self.projects = f"{prefix}.projects"
        self.control = f"{prefix}.control"
        self.attempts = f"{prefix}.attempts"
        self.project_status = f"{prefix}.project-status"
        self.finals = f"{prefix}.finals"  # the orchestrator's terminal results, before the committer
        self.orchestrator_state = f"{prefix}.orchestrator-state"  # its project and task entries
        self.results = f"{prefix}.results"
        self.messages = f"{prefix}.messages"
        self.memory = f"{prefix}.memory"
        self.llm_calls = f"{prefix}.llm-calls"
        self.agents = f"{prefix}.agents"
        self.dlq = f"{prefix}.dlq"
        # Live token deltas of calls in flight: short retention, not history (the sink skips it).
        self.tokens = f"{prefix}.tokens"
        # Plain JSON for Kafka Connect and non-Avro producers (streams/processors/json_bridge.py).
        self.tasks_json = f"{prefix}.tasks-json"
        self.results_json = f"{prefix}.results-json"

    @classmethod
    def from_settings(cls, settings: Settings) -> Topics:
        return cls(settings.kafka.topic_prefix, settings.processing.roles)

    def role(self, role: str) -> str:
        return f"{self.prefix}.agent.{role}"

    def role_topics(self) -> list[str]:
        return [self.role(r) for r in self.roles]

    def orchestrator_inputs(self) -> list[str]:
        """Co-partitioned, keyed by project_id: one orchestrator instance owns each project."""
        return [self.tasks, self.projects, self.attempts, self.control]

    def all(self) -> list[str]:
        """Every Avro topic of the event history; the JSON bridge topics carry copies of these events,
        and the live tokens are not history, so they are not here."""
        return [self.tasks, self.projects, self.control, *self.role_topics(), self.attempts, self.finals, self.results,
                self.project_status, self.messages, self.memory, self.llm_calls, self.agents, self.dlq]


def default_replication(brokers: int) -> int:
    """Copies of each partition when the settings do not say: three once the cluster has three
    brokers, else one per broker (a copy per broker is all a smaller cluster can hold)."""
    return max(1, min(3, brokers))


def default_min_insync(replication: int) -> int:
    """In-sync copies an acks=all write needs when the settings do not say: two of three, so a
    write is on two brokers before it is acknowledged and one broker may be lost without
    refusing writes; one for smaller replication factors."""
    return 2 if replication >= 3 else 1


@dataclass(frozen=True)
class Replication:
    """How many copies the topics get, and how many must be in sync for a write, and why."""

    brokers: int  # brokers the cluster had when asked
    factor: int
    min_insync: int
    source: str  # "cluster" (derived from the broker count) or "settings"


def replication_for(settings: Settings, brokers: int) -> Replication:
    """The replication plan for a cluster of ``brokers``; settings that ask for more copies than
    there are brokers are an error that names them."""
    k = settings.kafka
    factor = k.topic_replication if k.topic_replication is not None else default_replication(brokers)
    min_insync = k.topic_min_insync_replicas if k.topic_min_insync_replicas is not None else default_min_insync(factor)
    if factor > brokers:
        raise ConfigError(f"AIOS_TOPIC_REPLICATION={factor} but the cluster at {k.bootstrap} has {brokers} "
                          f"broker{'s' if brokers != 1 else ''} up: lower it, or unset it to follow the cluster")
    if min_insync > factor:
        raise ConfigError(f"AIOS_TOPIC_MIN_INSYNC_REPLICAS={min_insync} is more than the {factor} copies each "
                          "topic gets: no write could succeed; lower it")
    source = "settings" if k.topic_replication is not None or k.topic_min_insync_replicas is not None else "cluster"
    return Replication(brokers, factor, min_insync, source)


def topic_specs(settings: Settings, replication: Replication | None = None) -> list[TopicSpec]:
    """The full topic plan: partitions, replication, cleanup policy and retention. Without a
    ``replication`` asked of the cluster (:func:`replication_for`), the settings' or one copy."""
    t = Topics.from_settings(settings)
    if replication is None:
        copies = settings.kafka.topic_replication or 1
        replication = Replication(copies, copies, settings.kafka.topic_min_insync_replicas
                                  or default_min_insync(copies), "settings")
    parts, rf = settings.kafka.topic_partitions, replication.factor
    # Every topic takes the largest event AIOS produces (AIOS_MAX_MESSAGE_BYTES), stated rather than
    # left to the broker's default, so the codec's refusal and the broker's agree.
    size = {"max.message.bytes": str(settings.kafka.max_message_bytes + PRODUCER_HEADROOM_BYTES)}
    isr = {"min.insync.replicas": str(replication.min_insync), **size}
    keep = {"cleanup.policy": "delete", "retention.ms": str(settings.kafka.topic_retention_ms), **isr}
    # The DLQ keeps four times longer: it is where people look after something went wrong.
    dlq_retention = -1 if settings.kafka.topic_retention_ms < 0 else settings.kafka.topic_retention_ms * 4
    compacted = {"cleanup.policy": "compact", "min.compaction.lag.ms": "0", "segment.ms": "600000", **isr}
    # The orchestrator's inputs share the partition count and the project_id key (co-partitioned).
    specs = [
        TopicSpec(t.tasks, "Task", "project_id", parts, rf, keep),
        TopicSpec(t.projects, "ProjectPlan", "project_id", parts, rf, keep),
        TopicSpec(t.control, "Control", "project_id", parts, rf, keep),
    ]
    specs += [TopicSpec(t.role(r), "Assignment", "task_id", parts, rf, keep) for r in t.roles]
    specs += [
        TopicSpec(t.attempts, "TaskResult", "project_id", parts, rf, keep),
        TopicSpec(t.finals, "TaskResult", "project_id", parts, rf, keep),
        TopicSpec(t.results, "TaskResult", "project_id", parts, rf, keep),
        TopicSpec(t.project_status, "ProjectStatus", "project_id", parts, rf, compacted),
        TopicSpec(t.messages, "AgentMessage", "task_id", parts, rf, keep),
        TopicSpec(t.memory, "MemoryEvent", "scope id", parts, rf, keep),
        TopicSpec(t.llm_calls, "LlmCall", "task_id", parts, rf, keep),
        # The live agent registry: the latest status per agent_id survives compaction.
        TopicSpec(t.agents, "AgentStatus", "agent_id", parts, rf, compacted),
        TopicSpec(t.dlq, "DeadLetter", "source key", parts, rf,
                  {**keep, "retention.ms": str(dlq_retention)}),
    ]
    # An hour of live tokens is plenty for a viewer that reconnects; the answer is on the result.
    specs.append(TopicSpec(t.tokens, "TokenDelta", "task_id", parts, rf,
                           {"cleanup.policy": "delete", "retention.ms": str(TOKEN_RETENTION_MS), **isr}))
    specs += [
        TopicSpec(t.tasks_json, "Task as plain JSON", "any", parts, rf, keep),
        TopicSpec(t.results_json, "TaskResult as plain JSON", "project_id", parts, rf, keep),
    ]
    # Partitioned as the orchestrator's inputs (each entry goes to its project's input partition).
    specs.append(TopicSpec(t.orchestrator_state, "(orchestrator state entries, JSON)", "project_id[/task_id]",
                           parts, rf, compacted))
    return specs


def admin_client(settings: Settings) -> AdminClient:
    config: dict[str, Any] = {"bootstrap.servers": settings.kafka.bootstrap, "socket.timeout.ms": 10000,
                              "logger": LIBRDKAFKA, **settings.kafka.security()}
    return AdminClient(config)


@dataclass(frozen=True)
class TopicOutcome:
    name: str
    outcome: str  # created | exists
    partitions: int
    detail: str = ""
    replication: int = 0  # copies of each partition (what it was created with, or has)


@dataclass(frozen=True)
class CreatedTopics:
    """What ``aios topics create`` chose for the cluster it found, and what it did per topic."""

    replication: Replication
    topics: list[TopicOutcome]


def create_topics(settings: Settings, timeout_s: float = 30.0) -> list[TopicOutcome]:
    """Create every topic that does not exist yet; existing ones are reported, never altered."""
    return create_topics_for_cluster(settings, timeout_s).topics


def create_topics_for_cluster(settings: Settings, timeout_s: float = 30.0) -> CreatedTopics:
    """As :func:`create_topics`, with the replication plan taken from the cluster's broker count."""
    check_access(settings)
    admin = admin_client(settings)
    existing, brokers = _describe(admin, timeout_s)
    plan = replication_for(settings, brokers)
    specs = topic_specs(settings, plan)
    missing = [s for s in specs if s.name not in existing]
    outcomes: dict[str, TopicOutcome] = {}
    for spec in specs:
        if spec.name in existing:
            have, copies = existing[spec.name]
            notes = [f"has {have} partitions, plan says {spec.partitions}"] if have != spec.partitions else []
            if copies != spec.replication:
                notes.append(f"has {copies} copies, plan says {spec.replication}")
            outcomes[spec.name] = TopicOutcome(spec.name, "exists", have, "; ".join(notes), copies)
    if missing:
        futures = admin.create_topics(
            [NewTopic(s.name, num_partitions=s.partitions, replication_factor=s.replication, config=s.config)
             for s in missing],
            operation_timeout=timeout_s,
            request_timeout=timeout_s,
        )
        for spec in missing:
            try:
                futures[spec.name].result(timeout=timeout_s)
                outcomes[spec.name] = TopicOutcome(spec.name, "created", spec.partitions, "", spec.replication)
            except KafkaException as exc:
                err = exc.args[0]
                # A concurrent `topics create` may win the race: that is still success.
                if isinstance(err, CKafkaError) and err.code() == CKafkaError.TOPIC_ALREADY_EXISTS:
                    outcomes[spec.name] = TopicOutcome(spec.name, "exists", spec.partitions, "", spec.replication)
                    continue
                refused = authorization_problem(settings.kafka, err, spec.name, "create")
                if refused is not None:
                    raise refused from exc
                raise KafkaError(f"could not create topic {spec.name}: {err}") from exc
        wait_for_leaders(admin, {s.name: s.partitions for s in missing}, timeout_s)
    return CreatedTopics(plan, [outcomes[s.name] for s in specs])


def wait_for_leaders(admin: AdminClient, partitions: dict[str, int], timeout_s: float = 30.0) -> None:
    """Return once every topic has a leader for each of its partitions. The controller answers
    CreateTopics before the broker serves the topic; a client that looks in between is told the
    topic does not exist (and librdkafka caches that until its next metadata refresh)."""
    def unserved(meta: dict[str, Any]) -> list[str]:
        return [name for name, count in partitions.items()
                if (t := meta.get(name)) is None or t.error is not None or len(t.partitions) != count
                or any(p.leader < 0 for p in t.partitions.values())]

    _until_settled(admin, unserved, timeout_s, "topics without a leader for every partition")


def _until_settled(admin: AdminClient, unsettled: Callable[[dict[str, Any]], list[str]], timeout_s: float,
                   what: str) -> None:
    """Poll the broker's metadata until ``unsettled`` names no topic, or fail naming them."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            left = unsettled(admin.list_topics(timeout=5).topics)
        except KafkaException:
            left = ["(metadata unavailable)"]
        if not left:
            return
        if time.monotonic() >= deadline:
            raise KafkaError(f"{what} after {timeout_s:.0f}s: {', '.join(sorted(left))}; "
                             "is the broker healthy? (aios dev status)")
        time.sleep(0.1)


@dataclass(frozen=True)
class TopicInfo:
    name: str
    partitions: int
    replication: int
    cleanup_policy: str
    retention_ms: str
    record: str
    min_insync_replicas: str = "?"


def list_topics(settings: Settings, timeout_s: float = 15.0) -> list[TopicInfo]:
    """The plan's topics as they exist on the broker (missing ones are left out)."""
    check_access(settings)
    admin = admin_client(settings)
    try:
        meta = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise KafkaError(f"Kafka at {settings.kafka.bootstrap} did not answer: {exc}") from exc
    specs = {s.name: s for s in topic_specs(settings)}
    names = [n for n in specs if n in meta.topics]
    configs: dict[str, dict[str, str]] = {}
    if names:
        resources = [ConfigResource(ConfigResource.Type.TOPIC, n) for n in names]
        for res, fut in admin.describe_configs(resources, request_timeout=timeout_s).items():
            try:
                entries = fut.result(timeout=timeout_s)
            except KafkaException as exc:
                err = exc.args[0]
                if isinstance(err, CKafkaError) and err.code() == CKafkaError.UNKNOWN_TOPIC_OR_PART:
                    names.remove(res.name)  # deleted since the metadata was read: it no longer exists
                    continue
                raise KafkaError(f"could not read the configuration of topic {res.name}: {err}") from exc
            configs[res.name] = {k: str(v.value) for k, v in entries.items()}
    out = []
    for name in names:
        tmeta = meta.topics[name]
        first = next(iter(tmeta.partitions.values()), None)
        out.append(TopicInfo(
            name=name,
            partitions=len(tmeta.partitions),
            replication=len(first.replicas) if first is not None else 0,
            cleanup_policy=configs.get(name, {}).get("cleanup.policy", "?"),
            retention_ms=configs.get(name, {}).get("retention.ms", "?"),
            record=specs[name].record,
            min_insync_replicas=configs.get(name, {}).get("min.insync.replicas", "?"),
        ))
    return out


def _describe(admin: AdminClient, timeout_s: float) -> tuple[dict[str, tuple[int, int]], int]:
    """Each topic's (partitions, copies of its first partition), and how many brokers are up."""
    try:
        meta = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise KafkaError(f"Kafka did not answer within {timeout_s:.0f}s: {exc}; is it up? (aios dev up)") from exc
    topics = {}
    for name, t in meta.topics.items():
        first = next(iter(t.partitions.values()), None)
        topics[name] = (len(t.partitions), len(first.replicas) if first is not None else 0)
    return topics, len(meta.brokers)


def delete_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Delete every topic of ``settings.kafka.topic_prefix`` (its plan's topics and any other `<prefix>-` topic)."""
    admin = admin_client(settings)
    prefix = settings.kafka.topic_prefix
    names = [n for n in _describe(admin, timeout_s)[0] if n.startswith((f"{prefix}.", f"{prefix}-"))]
    if names:
        for name, future in admin.delete_topics(names, operation_timeout=timeout_s).items():
            try:
                future.result(timeout=timeout_s)
            except KafkaException as exc:
                raise KafkaError(f"could not delete topic {name}: {exc.args[0]}") from exc
        _wait_until_gone(admin, names, timeout_s)
    return sorted(names)


def _wait_until_gone(admin: AdminClient, names: list[str], timeout_s: float) -> None:
    """As for creation, the controller answers before the broker stops serving the topics: a
    client looking in between would still see them (and fail to describe them)."""
    _until_settled(admin, lambda meta: [n for n in names if n in meta], timeout_s,
                   "topics still listed after their deletion")
