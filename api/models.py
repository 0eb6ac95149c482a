"""Request and response models: the OpenAPI document is generated from these."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from aios.streams.orchestration.plan import PlannedTask

ID = r"^[A-Za-z0-9._:-]+$"
ROLE = r"^[a-z][a-z0-9_-]{0,39}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskIn(Strict):
    description: str = Field(min_length=1, max_length=20_000, description="What the agent should do.")
    role: str = Field("general", pattern=ROLE, description="The agent role that does the task.")
    project: str = Field("default", min_length=1, max_length=128, pattern=ID)
    priority: int = Field(0, ge=-1000, le=1000, description="Higher runs first among ready tasks.")
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

    project: str = Field(min_length=1, max_length=128, pattern=ID)
    goal: str | None = Field(None, min_length=1, max_length=20_000)
    role: str = Field("general", pattern=ROLE, description="With a goal: the role that works on it.")
    tasks: list[PlannedTask] | None = Field(None, min_length=1, max_length=10_000)
    budget_usd: float | None = Field(None, ge=0, le=1_000_000)

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
    reason: str = Field("", max_length=2_000)


class ControlAccepted(BaseModel):
    project_id: str
    task_id: str
    action: Literal["approve", "reject", "cancel"]


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


class TaskOut(BaseModel):
    task_id: str
    project_id: str
    role: str
    description: str
    state: str
    attempts: int
    reason: str
    result: ResultOut | None


class TaskEntryOut(BaseModel):
    task_id: str
    role: str
    state: str
    attempts: int
    reason: str
    depends_on: list[str] = Field(default_factory=list)


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
