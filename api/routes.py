"""The REST routes: produce tasks, plans and controls; read tasks, projects, results, agents, stats."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from redis.exceptions import RedisError

from aios.api.auth import bearer
from aios.api.errors import ApiError, Conflict, Forbidden, NotFound
from aios.api.models import (
    ID,
    AgentList,
    AgentOut,
    ControlAccepted,
    ControlIn,
    ErrorOut,
    Health,
    KeyCreated,
    KeyIn,
    KeyList,
    KeyOut,
    ProjectAccepted,
    ProjectIn,
    ProjectList,
    ProjectOut,
    ProjectSummary,
    ResultOut,
    ResultsOut,
    StatsOut,
    TaskAccepted,
    TaskEntryOut,
    TaskIn,
    TaskOut,
)
from aios.api.principal import Principal
from aios.api.rbac import Permission, allowed, check_write, require
from aios.api.services import Services
from aios.api.view import TaskRecord
from aios.connectors.history.queries import stats as history_stats
from aios.schemas.events import envelope, now_ms
from aios.schemas.sealed import is_sealed
from aios.streams.orchestration.goal import GOAL_TASK, PLANNER_ROLE
from aios.streams.orchestration.plan import Plan, PlanError, PlannedTask, plan_record, validate_plan
from aios.streams.readmodels.agent_registry import is_forgotten, live_roles_of, shown_state
from aios.streams.readmodels.task_client import build_task

TaskId = Annotated[str, Path(min_length=1, max_length=128, pattern=ID)]
ProjectId = Annotated[str, Path(min_length=1, max_length=128, pattern=ID)]
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 413, 429, 503)}

async def known_query(request: Request) -> None:
    """Refuse query parameters the route does not take: a typo (``?projet=``) must not be ignored
    silently, as the OpenAPI document says none other is accepted."""
    allowed: set[str] = set()
    stack = [getattr(request.scope.get("route"), "dependant", None)]
    while stack:  # the route's parameters and its dependencies'
        dependant = stack.pop()
        if dependant is not None:
            allowed |= {p.alias for p in dependant.query_params}
            stack.extend(dependant.dependencies)
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        takes = f"it takes {', '.join(sorted(allowed))}" if allowed else "it takes none"
        raise ApiError(f"unknown query parameter(s) {', '.join(repr(u) for u in unknown)}; {takes}")


# Every /v1 route is authenticated by api.auth.AuthMiddleware; each names the permission it needs.
router = APIRouter(prefix="/v1", responses=ERRORS, dependencies=[Depends(known_query)])
Reader = Annotated[Principal, Depends(require(Permission.READ))]
Submitter = Annotated[Principal, Depends(require(Permission.SUBMIT))]
Operator = Annotated[Principal, Depends(require(Permission.CONTROL))]
Admin = Annotated[Principal, Depends(require(Permission.ADMIN))]
health = APIRouter(dependencies=[Depends(known_query)])


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def _result_out(result: dict[str, Any]) -> ResultOut:
    return ResultOut.model_validate({**result, "sealed": is_sealed(result["output"])})


def _task_out(rec: TaskRecord) -> TaskOut:
    return TaskOut(task_id=rec.task_id, project_id=rec.project_id, role=rec.role, description=rec.description,
                   state=rec.state, attempts=rec.attempts, reason=rec.reason, sealed=rec.sealed,
                   result=_result_out(rec.result) if rec.result is not None else None)


@router.post("/tasks", status_code=202, response_model=TaskAccepted)
async def submit_task(request: Request, body: TaskIn, who: Submitter) -> TaskAccepted:
    """Produce a standalone task; 202 once Kafka has acknowledged it (acks=all)."""
    check_write(who, body.project)
    svc = services(request)
    if body.role not in svc.settings.processing.roles:
        raise ApiError(f"unknown role {body.role!r}; this deployment runs: {', '.join(svc.settings.processing.roles)}")
    task = build_task(body.description, role=body.role, project=body.project, priority=body.priority,
                      privacy=body.privacy,
                      submitted_by="api")
    partition, offset = await svc.produce(svc.topics.tasks, "Task", svc.sealer.seal_task(task), body.project)
    return TaskAccepted(task_id=task["task_id"], project_id=body.project, trace_id=task["trace_id"],
                        partition=partition, offset=offset, unserved_roles=_unserved(svc, {body.role}))


def _unserved(svc: Services, roles: set[str]) -> list[str]:
    """Roles that no live agent serves, from the live registry (the agents topic), not this process's settings."""
    return sorted(roles - live_roles_of(svc.view.agents()))


@router.post("/projects", status_code=202, response_model=ProjectAccepted)
async def submit_project(request: Request, body: ProjectIn, who: Submitter) -> ProjectAccepted:
    """Produce a plan (a DAG of tasks), or a goal, as one event. A goal is planned by the planner
    role when this deployment runs one (and no other role is asked for), else it is one task.
    Roles that no live agent serves (the agents topic) are named in ``unserved_roles``, and in the
    project's status notes: the work waits for them."""
    check_write(who, body.project)
    svc = services(request)
    if body.goal is not None and body.milestones:
        raise ApiError("milestones come with tasks; for a goal, the planner chooses the sprints")
    if body.goal is not None and PLANNER_ROLE in svc.settings.processing.roles and "role" not in body.model_fields_set:
        if svc.view.project(body.project) is not None:
            raise Conflict(f"project {body.project!r} already exists; plans are submitted once, choose another id")
        goal_event = {**envelope(), "project_id": body.project, "goal": body.goal, "budget_usd": body.budget_usd,
                      "submitted_by": "api", "tasks": []}
        await svc.produce(svc.topics.projects, "ProjectPlan", goal_event, body.project)
        return ProjectAccepted(project_id=body.project, task_ids=[GOAL_TASK], trace_id=goal_event["trace_id"],
                               unserved_roles=_unserved(svc, {PLANNER_ROLE}))
    tasks = body.tasks or [PlannedTask(id="goal", role=body.role, description=body.goal or "")]
    try:
        plan = Plan(project=body.project, tasks=tuple(tasks), budget_usd=body.budget_usd,
                    milestones=tuple(body.milestones))
        validate_plan(plan, svc.settings.processing.roles)
    except PlanError as exc:
        raise ApiError(str(exc)) from exc
    if svc.view.project(body.project) is not None:
        raise Conflict(f"project {body.project!r} already exists; plans are submitted once, choose another id")
    event = {**envelope(), "project_id": plan.project, "goal": body.goal or "", "budget_usd": plan.budget_usd,
             "submitted_by": "api", **plan_record(plan)}
    await svc.produce(svc.topics.projects, "ProjectPlan", svc.sealer.seal_plan(event), plan.project)
    return ProjectAccepted(project_id=plan.project, task_ids=[t.id for t in plan.tasks], trace_id=event["trace_id"],
                           unserved_roles=_unserved(svc, {t.role for t in plan.tasks}))


@router.get("/tasks/{task_id}", response_model=TaskOut)
async def get_task(request: Request, task_id: TaskId, who: Reader,
                   project: Annotated[str | None, Query(max_length=128, pattern=ID)] = None) -> TaskOut:
    """A task's state and, once finished, its result. ``project`` picks one when ids repeat."""
    rec = services(request).view.find_task(task_id, lambda p: project in (None, p) and who.sees(p))
    if rec is None:
        raise NotFound(f"no task {task_id!r} is known (yet); a task just submitted appears within a second")
    return _task_out(rec)


async def _control(request: Request, who: Principal, task_id: str, project: str | None, action: str,
                   reason: str) -> ControlAccepted:
    svc = services(request)
    rec = svc.view.find_task(task_id, lambda p: project in (None, p) and who.sees(p))
    owner = rec.project_id if rec is not None else None
    if owner is None and project is not None and who.sees(project) and action != "cancel":
        # A milestone id approves or rejects its sprint at the boundary.
        status = svc.view.project(project)
        owner = project if status and any(sp["id"] == task_id for sp in status.get("sprints", ())) else None
    if owner is None:
        raise NotFound(f"no task {task_id!r} is known; check the id (GET /v1/projects/{{id}} lists them)")
    await svc.control(owner, action, task_id, reason, f"api:{who.via}:{who.subject}")
    return ControlAccepted(project_id=owner, task_id=task_id, action=action)  # type: ignore[arg-type]


ProjectQuery = Annotated[str | None, Query(max_length=128, pattern=ID)]


@router.post("/tasks/{task_id}/approve", status_code=202, response_model=ControlAccepted)
async def approve(request: Request, task_id: TaskId, who: Operator, project: ProjectQuery = None) -> ControlAccepted:
    """Let a task waiting in awaiting_approval run; a milestone id (with ``project``) opens its sprint."""
    return await _control(request, who, task_id, project, "approve", "")


@router.post("/tasks/{task_id}/reject", status_code=202, response_model=ControlAccepted)
async def reject(request: Request, task_id: TaskId, body: Annotated[ControlIn, Body()], who: Operator,
                 project: ProjectQuery = None) -> ControlAccepted:
    """Fail a task waiting for approval; its dependents are skipped."""
    return await _control(request, who, task_id, project, "reject", body.reason or "rejected")


@router.post("/tasks/{task_id}/cancel", status_code=202, response_model=ControlAccepted)
async def cancel(request: Request, task_id: TaskId, who: Operator, project: ProjectQuery = None) -> ControlAccepted:
    """Cancel a task; its dependents are skipped."""
    return await _control(request, who, task_id, project, "cancel", "cancelled through the API")


@router.get("/projects", response_model=ProjectList)
async def list_projects(request: Request, who: Reader) -> ProjectList:
    """Every project with a status that this credential may see."""
    statuses = {p: s for p, s in services(request).view.projects().items() if who.sees(p)}
    return ProjectList(projects=[ProjectSummary(project_id=p, state=s["state"], percent_done=s["percent_done"],
                                                cost_usd=s["cost_usd"]) for p, s in sorted(statuses.items())])


@router.get("/projects/{project_id}", response_model=ProjectOut)
async def get_project(request: Request, project_id: ProjectId, who: Reader) -> ProjectOut:
    """A project's status as `aios status PROJECT` shows it, with each task's dependencies."""
    view = services(request).view
    status = view.project(project_id) if who.sees(project_id) else None
    if status is None:
        raise NotFound(f"no status for project {project_id!r} yet")
    edges = view.edges(project_id)
    tasks = [TaskEntryOut(**t, depends_on=edges.get(t["task_id"], [])) for t in status["tasks"]]
    return ProjectOut.model_validate({**status, "tasks": tasks})


@router.get("/projects/{project_id}/results", response_model=ResultsOut)
async def get_results(request: Request, project_id: ProjectId, who: Reader) -> ResultsOut:
    """The terminal result of every finished task of the project."""
    view = services(request).view
    records = view.project_tasks(project_id) if who.sees(project_id) else []
    if not records and (view.project(project_id) is None or not who.sees(project_id)):
        raise NotFound(f"no project {project_id!r} is known")
    return ResultsOut(project_id=project_id, results=[_result_out(r.result) for r in records if r.result is not None])


@router.get("/agents", response_model=AgentList)
async def agents(request: Request, who: Reader) -> AgentList:
    """The live agent registry (the compacted agents topic): an agent silent for three heartbeats
    is shown as ``gone``, and one silent for AIOS_AGENT_FORGET_AFTER_S is left out.

    A credential scoped to some projects sees only those projects' tasks among an agent's in-flight ones.
    """
    svc = services(request)
    view, now = svc.view, now_ms()
    forget_after_s = svc.settings.processing.agent_forget_after_s
    out = []
    for a in view.agents():
        if is_forgotten(a, now, forget_after_s):
            continue  # silent for too long: no longer listed (the orchestrator tombstones it)
        a = {**a, "state": shown_state(a, now)}
        if not who.all_projects:
            a = {**a, "in_flight": [t for t in a["in_flight"] if view.find_task(t, who.sees) is not None]}
        out.append(AgentOut.model_validate(a))
    return AgentList(agents=out, forget_after_s=forget_after_s)


@router.get("/stats", response_model=StatsOut)
async def stats(request: Request, who: Reader, project: ProjectQuery = None,
                since_s: Annotated[int, Query(ge=1, le=90 * 86400)] = 3600) -> StatsOut:
    """Throughput, latency quantiles, success rate, cost and load per role, from ClickHouse."""
    svc = services(request)
    if project is None and not who.all_projects:
        raise Forbidden("this credential is scoped to projects: ask for one with ?project=")
    if project is not None and not who.sees(project):
        raise NotFound(f"no project {project!r} is known")

    def run(store: Any) -> dict[str, Any]:
        return {"engine": store.engine, **history_stats(store, since_s=since_s, project_id=project).to_dict()}
    return StatsOut.model_validate(await svc.with_store(run))


@health.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up (no dependency is checked)."""
    return Health(status="ok")


@health.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def readyz(request: Request, response: Response) -> Health:
    """Kafka, Redis and the history store are reachable, and the live view has caught up.

    Each check says ``ok`` or ``unavailable``; why (addresses, error texts) is shown only to an
    operator's or admin's credential, since it describes the deployment's insides.
    """
    svc = services(request)
    checks = await svc.checks()
    ok = all(v == "ok" for v in checks.values())
    if not ok:
        response.status_code = 503
    if not await _may_see_internals(svc, request):
        checks = {name: "ok" if v == "ok" else "unavailable" for name, v in checks.items()}
    return Health(status="ok" if ok else "unavailable", checks=checks)


async def _may_see_internals(svc: Services, request: Request) -> bool:
    token = bearer(request)
    if token is None:
        return False
    try:  # rate-limited like any request that presents a credential
        principal = await svc.auth.authenticate(token, limit=True)
    except (ApiError, RedisError):
        return False
    return allowed(principal, Permission.CONTROL)


@router.get("/keys", response_model=KeyList)
async def list_keys(request: Request, who: Admin) -> KeyList:
    """Every API key's id, role, projects and state (never the key)."""
    return KeyList(keys=await services(request).keys.list())


@router.post("/keys", status_code=201, response_model=KeyCreated)
async def create_key(request: Request, body: KeyIn, who: Admin) -> KeyCreated:
    """Create a key; the response is the only time the key is shown."""
    try:
        key, info = await services(request).keys.create(body.role, body.projects, body.name)
    except ValueError as exc:
        raise ApiError(str(exc)) from exc
    return KeyCreated(key=key, **info.model_dump())


@router.delete("/keys/{key_id}", response_model=KeyOut)
async def revoke_key(request: Request, key_id: Annotated[str, Path(pattern=r"^[0-9a-f]{16}$")], who: Admin) -> KeyOut:
    """Revoke a key: the next request with it gets 401."""
    return await services(request).keys.revoke(key_id)
