"""A task's whole output, read back from where its reference points.

An assignment carries each dependency's output as an excerpt ending in a reference to the whole
(``schemas/limits.py``, ``excerpt``): the orchestrator names the attempt that produced it, as
``kafka://<attempts topic>/<partition>/<offset>``. The agent's read_dependency_output tool follows
the reference through :func:`output_fetcher`. Only the attempts topic of this deployment is read,
and only an attempt of the same project and task that succeeded is believed: a reference in a
forged assignment cannot read another tenant's output. A restricted task's output is sealed
(``streams/sealing.py``): the reader opens it with the worker's key ring, bound to that task's
identity, or reads nothing. (An artifact store for large outputs would add its own scheme here.)
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

from confluent_kafka import TopicPartition

from aios.agents.tools import FetchOutput
from aios.schemas.codec import Codec
from aios.schemas.errors import SchemaError
from aios.schemas.sealed import SealedFieldError
from aios.streams.kafka import make_consumer
from aios.streams.sealing import Sealer, output_aad
from aios.streams.settings import Settings
from aios.streams.topics import Topics

READ_TIMEOUT_S = 10.0


def parse_ref(ref: str, topic: str) -> tuple[int, int] | None:
    """(partition, offset) of a ``kafka://`` reference into ``topic``; None for anything else."""
    parts = urlsplit(ref)
    path = parts.path.strip("/").split("/")
    if parts.scheme != "kafka" or parts.netloc != topic or len(path) != 2 or not all(p.isdigit() for p in path):
        return None
    return int(path[0]), int(path[1])


def read_attempt_output(settings: Settings, codec: Codec, ref: str, project_id: str, task_id: str) -> str | None:
    """The output of the succeeded attempt ``ref`` points at, if it is ``project_id``'s ``task_id``."""
    topic = Topics.from_settings(settings).attempts
    where = parse_ref(ref, topic)
    if where is None:
        return None
    consumer = make_consumer(settings, group=f"{settings.kafka.topic_prefix}-output-reader")
    try:
        consumer.assign([TopicPartition(topic, where[0], where[1])])
        deadline = time.monotonic() + READ_TIMEOUT_S
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            if msg.offset() != where[1]:
                return None  # gone with retention: the next one is not it
            try:
                v = codec.decode(msg.value(), expect="TaskResult").value
            except SchemaError:
                return None
            ours = v["project_id"] == project_id and v["task_id"] == task_id and v["status"] == "succeeded"
            return str(v["output"]) if ours else None
        return None
    finally:
        consumer.close()


def output_fetcher(settings: Settings, codec: Codec, project_id: str, sealer: Sealer | None = None) -> FetchOutput:
    """The read_dependency_output tool's reader for tasks of ``project_id``; a sealed output is
    opened with ``sealer`` (None when it cannot be)."""
    async def fetch(task_id: str, ref: str) -> str | None:
        output = await asyncio.to_thread(read_attempt_output, settings, codec, ref, project_id, task_id)
        if output is None or sealer is None:
            return output
        try:
            return sealer.open(output, output_aad(project_id, task_id))
        except SealedFieldError:
            return None

    return fetch
