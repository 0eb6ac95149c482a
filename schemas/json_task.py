"""Plain JSON in and out, for Kafka Connect, kcat and any producer that does not speak Avro.

A JSON task is one object per record: ``description`` is required; ``role``, ``project_id``
(or ``project``), ``priority``, ``task_id``, ``depends_on``, ``privacy``, ``submitted_by``,
``metadata`` and ``trace_id`` are optional. Anything else is a mistake and is rejected with the
reason, so a typo never becomes a silently ignored field. The Task it becomes is checked against
the limits every entry point shares (``schemas/limits.py``): what the API refuses, this refuses.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from aios.schemas.checks import check_task
from aios.schemas.errors import InvalidRecordError, SchemaError
from aios.schemas.events import event_json, now_ms
from aios.schemas.jsonlimits import JsonTooDeepError, parse_json
from aios.schemas.limits import not_blank

FIELDS = {"description", "role", "project_id", "project", "priority", "task_id", "depends_on", "privacy",
          "submitted_by", "metadata", "trace_id"}
PRIVACY = ("normal", "restricted")
_NAMESPACE = uuid.UUID("5f0b7c1e-2a57-4c55-9a4e-6b1f2f0a9c11")


class InvalidJsonTaskError(SchemaError):
    """A JSON task record that cannot become a Task; the message says what to fix."""


class SubmitterNotAllowedError(InvalidJsonTaskError):
    """The record's submitter may not create tasks in its project (AIOS_INGRESS_SUBMITTERS)."""


def check_submitter(task: Mapping[str, Any], allowed: Mapping[str, Sequence[str]] | None) -> None:
    """Refuse a task whose ``submitted_by`` may not create tasks in its project; ``allowed`` maps each
    submitter to its projects (``*``: any). None allows everyone."""
    if allowed is None:
        return
    who, project = task["submitted_by"], task["project_id"]
    projects = allowed.get(who)
    if projects is None:
        raise SubmitterNotAllowedError(f"submitter {who!r} may not create tasks here: AIOS_INGRESS_SUBMITTERS "
                                       f"names {', '.join(sorted(allowed)) or 'no submitter'}")
    if "*" not in projects and project not in projects:
        raise SubmitterNotAllowedError(f"submitter {who!r} may not create tasks in project {project!r} "
                                       f"(AIOS_INGRESS_SUBMITTERS allows it {', '.join(projects)})")


def _text(obj: Mapping[str, Any], key: str, default: str) -> str:
    value = obj.get(key, default)
    if not isinstance(value, str) or not not_blank(value):  # blank as every entry point means it
        raise InvalidJsonTaskError(f"{key!r} must be a non-empty string, got {value!r}")
    return value


def _strings(value: Any, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidJsonTaskError(f"{key!r} must be a list of strings, got {value!r}")
    return value


def task_from_json(data: bytes | None, *, roles: Sequence[str], source: str, submitted_by: str = "json") -> dict[
        str, Any]:
    """The Task event for one JSON record.

    ``source`` names where the record came from (``topic/partition/offset``): the event id derives
    from it when the record brings no ``task_id``, so a redelivered record makes the same Task.
    """
    if not data:
        raise InvalidJsonTaskError("empty record: send one JSON object per record")
    try:
        obj = parse_json(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidJsonTaskError(f"not JSON ({exc}); send one JSON object per record") from exc
    except JsonTooDeepError as exc:
        raise InvalidJsonTaskError(f"{exc}: a task is one flat JSON object") from exc
    if not isinstance(obj, dict):
        raise InvalidJsonTaskError(f"a task must be a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - FIELDS)
    if unknown:
        raise InvalidJsonTaskError(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(FIELDS))}")
    description = _text(obj, "description", "")
    role = _text(obj, "role", "general")
    if role not in roles:
        raise InvalidJsonTaskError(f"unknown role {role!r}; this deployment serves: {', '.join(roles)}")
    priority = obj.get("priority", 0)
    if isinstance(priority, float) and priority.is_integer():
        priority = int(priority)  # 3.0 is an integer to JSON Schema, and so to the API
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise InvalidJsonTaskError(f"'priority' must be an integer, got {priority!r}")
    privacy = obj.get("privacy", "normal")
    if privacy not in PRIVACY:
        raise InvalidJsonTaskError(f"'privacy' must be one of {', '.join(PRIVACY)}, got {privacy!r}")
    metadata = obj.get("metadata", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise InvalidJsonTaskError(f"'metadata' must map strings to strings, got {metadata!r}")
    task_id = _text(obj, "task_id", uuid.uuid5(_NAMESPACE, f"task:{source}").hex)
    task = {
        "event_id": uuid.uuid5(_NAMESPACE, f"event:{source}:{task_id}").hex,
        "timestamp": now_ms(),
        "trace_id": _text(obj, "trace_id", uuid.uuid5(_NAMESPACE, f"trace:{task_id}").hex),
        "task_id": task_id,
        "project_id": _text(obj, "project_id", obj.get("project", "default")),
        "role": role,
        "description": description,
        "priority": priority,
        "depends_on": _strings(obj.get("depends_on", []), "depends_on"),
        "privacy": privacy,
        "submitted_by": _text(obj, "submitted_by", submitted_by),
        "metadata": metadata,
    }
    try:
        check_task(task)
    except InvalidRecordError as exc:
        raise InvalidJsonTaskError("; ".join(exc.problems)) from exc
    return task


def result_to_json(result: Mapping[str, Any]) -> bytes:
    """One TaskResult as a single line of JSON (timestamps in epoch milliseconds)."""
    return event_json(result)
