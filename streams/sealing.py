"""Restricted tasks' content, sealed at rest: which fields of which events, bound to which identity.

With ``AIOS_ENCRYPTION_KEY`` set, the processes that write a restricted task's content seal it
before it leaves them (schemas/sealed.py: AES-GCM, the key ring's first key):

| field | sealed by | identity (associated data) |
|---|---|---|
| ``Task.description``, a plan task's ``description``, ``Assignment.description`` | CLI, API, JSON ingress | description, project, task |
| ``TaskResult.output``, ``Assignment.context[dep]`` | the agent | output, project, task (the dependency's) |
| ``MemoryEvent.content`` (turns and summaries of restricted windows) | agent, memory processor | memory, project, memory id |
| ``AgentMessage.content`` (tool calls and what they read) | the agent | message, project, message id |
| LLM journal answers (Redis) | the agent | journal, project, task, attempt, step |

Everything between (the orchestrator, the results committer, the history sink, Redis windows,
Qdrant payloads) moves the sealed text as it is, so Kafka, Redis, Qdrant and ClickHouse hold
ciphertext. Readers that hold the key open it: the agent, the memory processor (to embed and to
summarise), ``aios submit --wait`` and the API. A reader without it gets the sealed text back and
a flag that says so; it never crashes on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aios.schemas.sealed import KeyRing, SealedFieldError, field_aad, is_sealed, sealed_kid, unseal_with
from aios.streams.metrics import SEALED
from aios.streams.settings import Settings

RESTRICTED = "restricted"


def is_restricted(privacy: object) -> bool:
    """Fail closed, as the orchestrator does: anything but normal (a typo included) is restricted."""
    return privacy not in (None, "", "normal")


def description_aad(project: str, task_id: str) -> bytes:
    return field_aad("description", project, task_id)


def output_aad(project: str, task_id: str) -> bytes:
    return field_aad("output", project, task_id)


def memory_aad(project: str, memory_id: str) -> bytes:
    return field_aad("memory", project, memory_id)


def message_aad(project: str, message_id: str) -> bytes:
    return field_aad("message", project, message_id)


def journal_aad(task_key: str, attempt: int, step: int) -> bytes:
    return field_aad("journal", task_key, str(attempt), str(step))


def unreadable_note(value: str) -> str:
    """What a reader without the key says instead of the content."""
    return (f"[sealed with key {sealed_kid(value) or '?'}: this process's AIOS_ENCRYPTION_KEY does not "
            "hold that key, so the content cannot be shown]")


@dataclass(frozen=True)
class Revealed:
    """A field as a reader got it: the plaintext, or (``sealed``) the sealed text it could not open."""

    text: str
    sealed: bool = False


class Sealer:
    """Seals and opens the restricted fields of events with a key ring (a no-op without one)."""

    def __init__(self, ring: KeyRing | None) -> None:
        self.ring = ring

    @classmethod
    def from_settings(cls, settings: Settings) -> Sealer:
        return cls(settings.stores.key_ring())

    @property
    def enabled(self) -> bool:
        return self.ring is not None

    def seal(self, text: str, aad: bytes) -> str:
        """``text`` sealed (when a key ring is set and it is not sealed already)."""
        if self.ring is None or is_sealed(text):
            return text
        SEALED.labels("seal").inc()
        return self.ring.seal(text, aad)

    def open(self, text: str, aad: bytes) -> str:
        """The plaintext of ``text`` (plain text passes); raises SealedFieldError when it cannot."""
        if not is_sealed(text):
            return text
        try:
            plain = unseal_with(self.ring, text, aad)
        except SealedFieldError:
            SEALED.labels("unreadable").inc()
            raise
        SEALED.labels("open").inc()
        return plain

    def reveal(self, text: str, aad: bytes) -> Revealed:
        """Like :meth:`open`, but a value that cannot be opened comes back sealed, flagged."""
        try:
            return Revealed(self.open(text, aad))
        except SealedFieldError:
            return Revealed(text, sealed=True)

    # --- what writers seal -----------------------------------------------------------------

    def seal_task(self, task: dict[str, Any]) -> dict[str, Any]:
        """A Task event with its description sealed when it is restricted."""
        if self.ring is None or not is_restricted(task.get("privacy")):
            return task
        return {**task, "description": self.seal(task["description"],
                                                 description_aad(task["project_id"], task["task_id"]))}

    def seal_plan(self, plan: dict[str, Any]) -> dict[str, Any]:
        """A ProjectPlan event with each restricted task's description sealed."""
        if self.ring is None:
            return plan
        project = plan["project_id"]
        return {**plan, "tasks": [
            {**t, "description": self.seal(t["description"], description_aad(project, t["task_id"]))}
            if is_restricted(t.get("privacy")) else t for t in plan["tasks"]]}

    # --- what readers open -----------------------------------------------------------------

    def reveal_event(self, kind: str, v: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        """An event with its sealed fields opened, and whether any stayed sealed. ``kind`` is the
        topic's short name (tasks, plans, results, attempts, finals, messages, memory)."""
        out = dict(v)
        sealed = False
        project = str(v.get("project_id", ""))
        if kind == "tasks" and is_sealed(v.get("description")):
            r = self.reveal(v["description"], description_aad(project, v["task_id"]))
            out["description"], sealed = r.text, r.sealed
        elif kind in ("results", "attempts", "finals") and is_sealed(v.get("output")):
            r = self.reveal(v["output"], output_aad(project, v["task_id"]))
            out["output"], sealed = r.text, r.sealed
        elif kind == "plans":
            tasks = []
            for t in v.get("tasks", ()):
                if is_sealed(t.get("description")):
                    r = self.reveal(t["description"], description_aad(project, t["task_id"]))
                    t = {**t, "description": r.text}
                    sealed = sealed or r.sealed
                tasks.append(t)
            out["tasks"] = tasks
        elif kind == "messages" and is_sealed(v.get("content")):
            r = self.reveal(v["content"], message_aad(project, v["message_id"]))
            out["content"], sealed = r.text, r.sealed
        elif kind == "memory" and is_sealed(v.get("content")):
            r = self.reveal(v["content"], memory_aad(project, v["memory_id"]))
            out["content"], sealed = r.text, r.sealed
        return out, sealed
