"""Artifacts over HTTP: list a project's files, download one, read a task's whole output.

Every route is for callers who may read the project (RBAC's read permission and the credential's
project scope); another project's artifacts are a 404, as its tasks are. A download is sent as an
attachment with its SHA-256 in ``X-Checksum-Sha256``, and never as a type a browser would run
(text is ``text/plain``, anything else ``application/octet-stream``).
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import PlainTextResponse

from aios.api.errors import NotFound
from aios.api.models import ID, ArtifactList, ErrorOut, StoredArtifactOut
from aios.api.principal import Principal
from aios.api.rbac import Permission, require
from aios.api.routes import known_query
from aios.connectors.artifacts import ArtifactNotFoundError, ArtifactStore
from aios.schemas.artifacts import ArtifactNameError, check_name, project_prefix
from aios.streams.artifacts import open_artifact_store, whole_output

MAX_LISTED = 1_000
# A path under a project: <task id, quoted>/<attempt>/<artifact name>.
_PATH = re.compile(r"(?P<task>[A-Za-z0-9._~%-]+)/(?P<attempt>[0-9]{1,6})/(?P<name>.+)")
_TEXT = ("text/", "application/json", "application/xml", "application/x-yaml", "application/javascript")

Reader = Annotated[Principal, Depends(require(Permission.READ))]
ProjectId = Annotated[str, Path(min_length=1, max_length=128, pattern=ID)]
artifacts_router = APIRouter(prefix="/v1", tags=["artifacts"], dependencies=[Depends(known_query)],
                             responses={code: {"model": ErrorOut} for code in (400, 401, 403, 404, 429, 503)})


def artifact_store(request: Request) -> ArtifactStore:
    """The store the settings name, opened once per app."""
    store: ArtifactStore | None = getattr(request.app.state, "artifacts", None)
    if store is None:
        store = open_artifact_store(request.app.state.services.settings)
        request.app.state.artifacts = store
    return store


def _visible(who: Principal, project_id: str) -> None:
    if not who.sees(project_id):
        raise NotFound(f"no artifacts of project {project_id!r} are known")


@artifacts_router.get("/projects/{project_id}/artifacts", response_model=ArtifactList)
async def list_artifacts(request: Request, project_id: ProjectId, who: Reader,
                         task: Annotated[str | None, Query(max_length=128, pattern=ID)] = None,
                         limit: Annotated[int, Query(ge=1, le=MAX_LISTED)] = 200) -> ArtifactList:
    """The project's artifacts (or one task's), by path: ``<task>/<attempt>/<name>``."""
    _visible(who, project_id)
    base = project_prefix(project_id)
    found = await artifact_store(request).list_prefix(project_prefix(project_id, task), limit)
    return ArtifactList(project_id=project_id, artifacts=[
        StoredArtifactOut(path=o.key[len(base):], size=o.size, uri=o.uri) for o in found])


# response_class=Response documents no JSON body for 200; the errors stay JSON (ErrorOut).
@artifacts_router.get("/projects/{project_id}/artifacts/{path:path}", response_class=Response, responses={200: {
    "description": "The artifact's bytes.",
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                "text/plain": {"schema": {"type": "string"}}}}})
async def get_artifact(request: Request, project_id: ProjectId, path: str, who: Reader) -> Response:
    """One artifact's bytes, as an attachment, with their SHA-256 in ``X-Checksum-Sha256``."""
    _visible(who, project_id)
    match = _PATH.fullmatch(path)
    try:
        if match is None or match["task"] in (".", ".."):
            raise ArtifactNameError(f"{path!r:.100}")
        name = check_name(match["name"])
    except ArtifactNameError:
        raise NotFound(f"no artifact {path!r:.100} in project {project_id!r}: a path is <task>/<attempt>/<name>, "
                       f"as GET /v1/projects/{project_id}/artifacts lists them") from None
    try:
        data = await artifact_store(request).read(project_prefix(project_id) + path)
    except ArtifactNotFoundError:
        raise NotFound(f"no artifact {path!r:.100} in project {project_id!r}") from None
    kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
    media = "text/plain; charset=utf-8" if kind.startswith(_TEXT) else "application/octet-stream"
    filename = name.rsplit("/", 1)[-1]
    return Response(data, media_type=media, headers={
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename)}",
        "X-Checksum-Sha256": hashlib.sha256(data).hexdigest()})


@artifacts_router.get("/tasks/{task_id}/output", response_class=Response, responses={200: {
    "description": "The whole output.", "content": {"text/plain": {"schema": {"type": "string"}}}}})
async def get_output(request: Request, task_id: Annotated[str, Path(min_length=1, max_length=128, pattern=ID)],
                     who: Reader, project: Annotated[str | None, Query(max_length=128, pattern=ID)] = None
                     ) -> Response:
    """A finished task's whole output as text: read from the artifact store (checked against its
    sha256) when the result carries an excerpt of it. ``project`` picks one when ids repeat."""
    view = request.app.state.services.view
    rec = view.find_task(task_id, lambda p: project in (None, p) and who.sees(p))
    if rec is None or rec.result is None:
        raise NotFound(f"no finished task {task_id!r} is known (GET /v1/tasks/{task_id} shows its state)")
    if rec.sealed:
        raise NotFound(f"task {task_id!r} is restricted and its output sealed with a key this API does not hold")
    try:
        text = await whole_output(artifact_store(request), rec.result)
    except ArtifactNotFoundError:
        raise NotFound(f"the whole output of {task_id!r} is no longer in the artifact store") from None
    return PlainTextResponse(text)

