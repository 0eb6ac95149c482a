"""A task's whole output, read back from where its reference points.

An assignment carries each dependency's output as an excerpt ending in a reference to the whole
(``schemas/limits.py``, ``excerpt``): the orchestrator names the attempt that produced it, as
``kafka://<attempts topic>/<partition>/<offset>``. The agent's read_dependency_output tool follows
the reference through :func:`output_fetcher`. Only the attempts topic of this deployment is read,
and only an attempt of the same project and task that succeeded is believed: a reference in a
forged assignment cannot read another tenant's output. A restricted task's output is sealed
(``streams/sealing.py``): the reader opens it with the worker's key ring, bound to that task's
identity, or reads nothing. An output over AIOS_OUTPUT_INLINE_BYTES was kept whole in the artifact
store and its event holds an excerpt ending in the artifact's URI: the reader follows that too, only
into the same project's and task's folder of this deployment's store (``streams/artifacts.py``).
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

from confluent_kafka import TopicPartition

from aios.agents.tools import FetchOutput
from aios.connectors.artifacts import ArtifactNotFoundError, ArtifactStore
from aios.schemas.codec import Codec
from aios.schemas.errors import SchemaError
from aios.schemas.limits import excerpt_ref
from aios.schemas.sealed import SealedFieldError
from aios.streams.artifacts import in_project
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


def output_fetcher(settings: Settings, codec: Codec, project_id: str, sealer: Sealer | None = None,
                   artifacts: ArtifactStore | None = None) -> FetchOutput:
    """The read_dependency_output tool's reader for tasks of ``project_id``; a sealed output is
    opened with ``sealer`` (None when it cannot be); an output kept in ``artifacts`` is read there."""
    async def fetch(task_id: str, ref: str) -> str | None:
        if artifacts is not None and artifacts.key_of(ref) is not None:
            return await read_artifact_output(artifacts, ref, project_id, task_id)
        output = await asyncio.to_thread(read_attempt_output, settings, codec, ref, project_id, task_id)
        if output is not None and sealer is not None:
            try:
                output = sealer.open(output, output_aad(project_id, task_id))
            except SealedFieldError:
                return None
        inner = excerpt_ref(output) if output is not None and artifacts is not None else None
        if inner is not None and artifacts is not None and artifacts.key_of(inner) is not None:
            # The attempt itself carries an excerpt of an output kept in the artifact store.
            return await read_artifact_output(artifacts, inner, project_id, task_id)
        return output

    return fetch


async def read_artifact_output(store: ArtifactStore, uri: str, project_id: str, task_id: str) -> str | None:
    """The output kept at ``uri``, if it is in ``project_id``'s ``task_id`` folder and still there."""
    if not in_project(store, uri, project_id, task_id):
        return None
    key = store.key_of(uri)
    assert key is not None  # noqa: S101 - in_project checked it
    try:
        return (await store.read(key)).decode("utf-8", "replace")
    except ArtifactNotFoundError:
        return None
