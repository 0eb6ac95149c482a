"""Artifacts seen from the pipeline: the store the settings name, what an agent's attempt may write
there, and reading a result's whole output back when it was kept there.

A result's ``artifacts`` lists what its attempt wrote (name, size, sha256, URI). An output over
AIOS_OUTPUT_INLINE_BYTES is one of them, ``output.md``, and the result's ``output`` is an excerpt
ending in its URI (``schemas/limits.py``, ``excerpt``). :func:`whole_output` follows that URI for
the API and the CLI, checked against the reference's size and sha256; the agents'
read_dependency_output tool follows it through ``readmodels/outputs.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aios.agents.tools import SaveArtifact
from aios.connectors.artifacts import ArtifactConfig, ArtifactStore, open_artifacts
from aios.schemas.artifacts import ArtifactRef, artifact_key, project_prefix
from aios.schemas.limits import excerpt_ref
from aios.streams.metrics import ARTIFACT_BYTES, ARTIFACTS
from aios.streams.settings import Settings


def artifact_config(settings: Settings) -> ArtifactConfig:
    """The connector's typed config from the settings (read once, at the edge)."""
    s = settings.stores
    secret = s.artifacts_secret_access_key
    return ArtifactConfig(
        data_dir=s.data_dir, url=s.artifacts_url, endpoint=s.artifacts_endpoint, region=s.artifacts_region,
        access_key_id=s.artifacts_access_key_id,
        secret_access_key=None if secret is None else secret.get_secret_value(), max_bytes=s.artifacts_max_bytes)


def open_artifact_store(settings: Settings) -> ArtifactStore:
    return open_artifacts(artifact_config(settings))


def attempt_saver(store: ArtifactStore, assignment: Mapping[str, Any]) -> SaveArtifact:
    """How one attempt's write_artifact (and its oversized output) reach the store: under
    ``<project>/<task>/<attempt>/<name>``, so attempts never overwrite each other's files and a
    replay of the same attempt writes the same bytes to the same keys."""
    project, task, attempt = assignment["project_id"], assignment["task_id"], int(assignment["attempt"])

    async def save(name: str, content: str) -> ArtifactRef:
        try:
            ref = await store.save(artifact_key(project, task, attempt, name), name, content.encode("utf-8"))
        except Exception:
            ARTIFACTS.labels("failed").inc()
            raise
        ARTIFACTS.labels("written").inc()
        ARTIFACT_BYTES.inc(ref.size)
        return ref

    return save


def result_artifacts(result: Mapping[str, Any]) -> list[ArtifactRef]:
    """The references a TaskResult carries (none from results written before artifacts existed)."""
    return [ArtifactRef.from_event(m) for m in result.get("artifacts") or ()]


def output_artifact(result: Mapping[str, Any]) -> ArtifactRef | None:
    """The artifact holding the result's whole output, when its ``output`` is an excerpt of one."""
    uri = excerpt_ref(str(result.get("output") or ""))
    return next((ref for ref in result_artifacts(result) if ref.uri == uri), None) if uri else None


async def whole_output(store: ArtifactStore, result: Mapping[str, Any]) -> str:
    """The result's output, whole: read from the artifact store (checked against its sha256) when
    the event carries an excerpt of it, else the output as it is."""
    ref = output_artifact(result)
    if ref is None or not in_project(store, ref.uri, str(result["project_id"]), str(result["task_id"])):
        return str(result.get("output") or "")
    return (await store.load(ref)).decode("utf-8", "replace")


def in_project(store: ArtifactStore, uri: str, project_id: str, task_id: str | None = None) -> bool:
    """Whether ``uri`` is in this store, under ``project_id`` (and ``task_id``): a reference in a
    forged event cannot read another project's files."""
    key = store.key_of(uri)
    return key is not None and key.startswith(project_prefix(project_id, task_id))
