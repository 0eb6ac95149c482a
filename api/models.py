"""Request and response models: the OpenAPI document is generated from these.

The request models state the limits every entry point shares (``schemas/limits.py``), so a client
generated from the OpenAPI document sends only what the API, and the processors behind it, accept.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.json_schema import SkipJsonSchema

from aios.schemas import limits as L
from aios.streams.orchestration.plan import JsonInt, Milestone, PlannedTask

ID = L.ID_PATTERN
ROLE = L.ROLE_PATTERN


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskIn(Strict):
    description: str = Field(min_length=1, max_length=L.MAX_DESCRIPTION_CHARS, pattern=L.NOT_BLANK_PATTERN,
                             description="What the agent should do (not blank).")
    role: str = Field("general", pattern=ROLE, description="The agent role that does the task.")
    project: str = Field("default", min_length=1, max_length=L.MAX_ID_CHARS, pattern=ID)
    priority: JsonInt = Field(0, ge=L.MIN_PRIORITY, le=L.MAX_PRIORITY,
                                description="Higher runs first among ready tasks.")
    privacy: Literal["normal", "restricted"] = Field("normal", description="restricted: local models only.")


class TaskAccepted(BaseModel):
    task_id: str
    project_id: str
    trace_id: str
    partition: int
    offset: int
    unserved_roles: list[str] = Field(
        default_factory=list,
        description="Roles this work needs that no live agent serves (from the agents topic): it waits for one.")


class ProjectIn(Strict):
    """A project from a goal (one task for ``role``) or from a plan (``tasks``, a DAG): give one."""

    # "Exactly one of goal and tasks", stated in the schema too (oneOf), and neither may be null.
    model_config = ConfigDict(extra="forbid", json_schema_extra={"oneOf": [{"required": ["goal"]},
                                                                           {"required": ["tasks"]}]})

    project: str = Field(min_length=1, max_length=L.MAX_ID_CHARS, pattern=ID)
    goal: Annotated[str, Field(min_length=1, max_length=L.MAX_GOAL_CHARS, pattern=L.NOT_BLANK_PATTERN)] | \
        SkipJsonSchema[None] = Field(None, description="What the project should achieve (not blank).")
    role: str = Field("general", pattern=ROLE, description="With a goal: the role that works on it.")
    tasks: Annotated[list[PlannedTask], Field(min_length=1, max_length=L.MAX_PLAN_TASKS)] | \
        SkipJsonSchema[None] = Field(None, description="The plan: tasks and their dependencies.")
    budget_usd: float | None = Field(None, ge=0, le=L.MAX_BUDGET_USD, strict=True, allow_inf_nan=False)
    milestones: list[Milestone] = Field(default_factory=list, max_length=L.MAX_MILESTONES,
                                        description="With tasks: sprints, in the order they run.")

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            nulls = [k for k in ("goal", "tasks") if k in data and data[k] is None]
            if nulls:
                raise ValueError(f"{' and '.join(nulls)} may not be null: leave the field out instead")
        return data

    @model_validator(mode="after")
    def _goal_or_plan(self) -> ProjectIn:
        if (self.goal is None) == (self.tasks is None):
            raise ValueError("give either 'goal' (text) or 'tasks' (a plan), not both and not neither")
        return self


class ProjectAccepted(BaseModel):
    project_id: str
    task_ids: list[str]
    trace_id: str
    unserved_roles: list[str] = Field(
        default_factory=list,
        description="Roles this work needs that no live agent serves (from the agents topic): it waits for one.")


class ControlIn(Strict):
    reason: str = Field("", max_length=L.MAX_REASON_CHARS)


class ControlAccepted(BaseModel):
    project_id: str
    task_id: str
    action: Literal["approve", "reject", "cancel"]


class ArtifactOut(BaseModel):
    """A file the attempt produced, in the artifact store (docs/artifacts.md)."""

    name: str
    size: int = Field(description="Bytes.")
    sha256: str = Field(description="SHA-256 of the bytes, hex.")
    uri: str = Field(description="Where the store keeps it (s3://… or file://…); download it through "
                     "GET /v1/projects/{project_id}/artifacts/{path}.")


class StoredArtifactOut(BaseModel):
    path: str = Field(description="<task>/<attempt>/<name>: the artifact's path in its project.")
    size: int
    uri: str


class ArtifactList(BaseModel):
    project_id: str
    artifacts: list[StoredArtifactOut]


class ResultOut(BaseModel):
    task_id: str
    project_id: str
    role: str
    attempt: int
    status: str
    output: str
    error: str | None
    error_type: str | None
    agent_id: str
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_ms: float
    timestamp: datetime
    submitted_at: datetime
    sealed: bool = Field(False, description="The output is a restricted task's, sealed with a key this API does "
                         "not hold (AIOS_ENCRYPTION_KEY): it is shown as stored, not as text.")
    artifacts: list[ArtifactOut] = Field(
        default_factory=list, description="Files the attempt produced. An output over AIOS_OUTPUT_INLINE_BYTES is "
        "one of them (output.md) and `output` is its excerpt: GET /v1/tasks/{task_id}/output reads it whole.")


class TaskOut(BaseModel):
    task_id: str
    project_id: str
    role: str
    description: str
    state: str
    attempts: int
    reason: str
    result: ResultOut | None
    sealed: bool = Field(False, description="The description or output is sealed with a key this API does not "
                         "hold (AIOS_ENCRYPTION_KEY).")


class TaskEntryOut(BaseModel):
    task_id: str
    role: str
    state: str
    attempts: int
    reason: str
    depends_on: list[str] = Field(default_factory=list)
    milestone: str = Field("", description="The sprint the task runs in; empty: none.")
    review: str = Field("", description="The sprint review's verdict on the task.")
    estimate_tokens: int = 0
    estimate_seconds: float = 0.0
    estimate_usd: float = 0.0
    tokens: int = Field(0, description="Actual tokens in and out, over every attempt.")
    seconds: float = Field(0.0, description="Actual seconds in LLM calls, over every attempt.")
    cost_usd: float = 0.0


class SprintOut(BaseModel):
    """A sprint (milestone): its state and its tasks' estimates against actuals."""

    id: str
    title: str
    state: str
    review: str
    tasks: int
    finished: int
    estimate_tokens: int
    estimate_seconds: float
    estimate_usd: float
    tokens: int
    seconds: float
    cost_usd: float


class ReplanOut(BaseModel):
    """What a re-plan changed (ids listed up to 100 per kind; ``counts`` are whole), or why it failed."""

    after: str
    state: str
    summary: str
    added: list[str]
    removed: list[str]
    changed: list[str]
    counts: dict[str, int]
    error: str


class ProjectOut(BaseModel):
    project_id: str
    state: str
    counts: dict[str, int]
    percent_done: float
    critical_path: list[str]
    cost_usd: float
    budget_usd: float | None
    started_at: datetime
    elapsed_ms: int
    notes: list[str]
    tasks: list[TaskEntryOut]
    sprints: list[SprintOut] = Field(default_factory=list)
    replans: list[ReplanOut] = Field(default_factory=list)


class ProjectSummary(BaseModel):
    project_id: str
    state: str
    percent_done: float
    cost_usd: float


class ProjectList(BaseModel):
    projects: list[ProjectSummary]


class ResultsOut(BaseModel):
    project_id: str
    results: list[ResultOut]


class AgentOut(BaseModel):
    agent_id: str
    role: str
    state: str
    in_flight: list[str]
    version: str
    host: str
    heartbeat_interval_ms: int
    timestamp: datetime


class AgentList(BaseModel):
    agents: list[AgentOut]
    forget_after_s: float = 300.0


class StatsOut(BaseModel):
    engine: str
    since_s: int
    project_id: str | None
    submitted: int
    results: int
    succeeded: int
    failed: int
    tasks_per_min: float
    success_rate: float | None
    latency_ms: dict[str, float | None]
    cost: list[dict[str, Any]]
    top_failures: list[dict[str, Any]]
    roles: list[dict[str, Any]]
    dead_letters: int


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)


class ErrorOut(BaseModel):
    detail: str


class KeyIn(Strict):
    role: Literal["admin", "operator", "submitter", "viewer"]
    projects: list[Annotated[str, Field(min_length=1, max_length=128, pattern=r"^(\*|[A-Za-z0-9._:-]+)$")]] = Field(
        min_length=1, max_length=1000, description="Project ids the key may touch; ['*'] for all.")
    name: str = Field("", max_length=200)


class KeyOut(BaseModel):
    """An API key's record as shown to people: never the secret, never its hash."""

    id: str
    role: str
    projects: list[str]
    name: str
    created_at: int
    revoked: bool


class KeyCreated(KeyOut):
    key: str = Field(description="The API key: shown once, only its salted hash is stored.")


class KeyList(BaseModel):
    keys: list[KeyOut]
